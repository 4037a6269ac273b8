"""The GraphQL gateway: one schema over the orders and inventory services. Every list is
loaded by a per-request DataLoader, so a request costs one statement per kind of row
(orders, their items, their products) whatever the number of orders."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import strawberry
from graphql import GraphQLError
from strawberry.dataloader import DataLoader
from strawberry.types import Info

MAX_PAGE = 500


@strawberry.type
class Product:
    sku: str
    name: str
    price_cents: int
    stock: int


@strawberry.type
class OrderItem:
    quantity: int
    unit_price_cents: int
    sku: str

    @strawberry.field
    async def product(self, info: Info) -> Product | None:
        return await info.context.products.load(self.sku)


@strawberry.type
class Order:
    id: strawberry.ID
    customer: str
    status: str
    total_cents: int

    @strawberry.field
    async def items(self, info: Info) -> list[OrderItem]:
        return await info.context.items.load(str(self.id))


def _order(row: dict) -> Order:
    return Order(id=strawberry.ID(row["id"]), customer=row["customer"], status=row["status"],
                 total_cents=row["total_cents"])  # fmt: skip


class Context:
    """One per request: fresh loaders (a loader caches; it must never outlive its request)."""

    def __init__(self, market) -> None:
        self.market = market
        self.items = DataLoader(load_fn=self._items)
        self.products = DataLoader(load_fn=self._products)

    async def _items(self, order_ids: list[str]) -> list[list[OrderItem]]:
        found = self.market.orders.items_of(order_ids)
        return [[OrderItem(quantity=r["qty"], unit_price_cents=r["unit_price_cents"],
                           sku=r["sku"]) for r in found[i]] for i in order_ids]  # fmt: skip

    async def _products(self, skus: list[str]) -> list[Product | None]:
        found = self.market.inventory.products(skus)
        return [Product(sku=s, name=found[s]["name"], price_cents=found[s]["price_cents"],
                        stock=found[s]["stock"]) if s in found else None for s in skus]  # fmt: skip


@strawberry.type
class Query:
    @strawberry.field
    def orders(self, info: Info, limit: int = 20, offset: int = 0) -> list[Order]:
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise GraphQLError(f"limit must be between 1 and {MAX_PAGE}, offset >= 0")
        return [_order(row) for row in info.context.market.orders.page(limit, offset)]

    @strawberry.field
    def order(self, info: Info, id: strawberry.ID) -> Order | None:
        row = info.context.market.orders.by_ids([str(id)]).get(str(id))
        return _order(row) if row else None

    @strawberry.field
    async def product(self, info: Info, sku: str) -> Product | None:
        return await info.context.products.load(sku)


schema = strawberry.Schema(query=Query)


def execute(market, query: str, variables: dict | None = None) -> dict:
    """Run one request; ``{"data": ..., "errors": [messages] or None}``."""
    coroutine = schema.execute(query, variable_values=variables, context_value=Context(market))
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        result = asyncio.run(coroutine)
    else:  # inside a running loop (a notebook): run the request in a thread of its own
        with ThreadPoolExecutor(1) as pool:
            result = pool.submit(asyncio.run, coroutine).result()
    errors = [error.message for error in result.errors] if result.errors else None
    return {"data": result.data, "errors": errors}
