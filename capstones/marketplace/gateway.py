"""The GraphQL gateway: one schema over the orders and inventory services.

Starter: every resolver asks its service for what it needs, one order or one product at a
time. TODO (R5): count the statements of ``{ orders(limit: 50) { items { product { name } } } }``
and bring them down to a constant (per-request DataLoaders, as in Step 8)."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

MAX_PAGE = 500


@strawberry.type
class Product:
    sku: str
    name: str
    price_cents: int
    stock: int


def _product(row: dict) -> Product:
    return Product(sku=row["sku"], name=row["name"], price_cents=row["price_cents"],
                   stock=row["stock"])  # fmt: skip


@strawberry.type
class OrderItem:
    quantity: int
    unit_price_cents: int
    sku: str

    @strawberry.field
    async def product(self, info: Info) -> Product | None:
        found = info.context.market.inventory.products([self.sku])  # one statement per item
        return _product(found[self.sku]) if self.sku in found else None


@strawberry.type
class Order:
    id: strawberry.ID
    customer: str
    status: str
    total_cents: int

    @strawberry.field
    async def items(self, info: Info) -> list[OrderItem]:
        rows = info.context.market.orders.items_of(str(self.id))  # one statement per order
        return [OrderItem(quantity=r["qty"], unit_price_cents=r["unit_price_cents"],
                          sku=r["sku"]) for r in rows]  # fmt: skip


def _order(row: dict) -> Order:
    return Order(id=strawberry.ID(row["id"]), customer=row["customer"], status=row["status"],
                 total_cents=row["total_cents"])  # fmt: skip


class Context:
    """One per request. TODO (R5): the request's DataLoaders belong here."""

    def __init__(self, market) -> None:
        self.market = market


@strawberry.type
class Query:
    @strawberry.field
    def orders(self, info: Info, limit: int = 20, offset: int = 0) -> list[Order]:
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise GraphQLError(f"limit must be between 1 and {MAX_PAGE}, offset >= 0")
        return [_order(row) for row in info.context.market.orders.page(limit, offset)]

    @strawberry.field
    def order(self, info: Info, id: strawberry.ID) -> Order | None:
        row = info.context.market.orders.by_id(str(id))
        return _order(row) if row else None

    @strawberry.field
    async def product(self, info: Info, sku: str) -> Product | None:
        found = info.context.market.inventory.products([sku])
        return _product(found[sku]) if sku in found else None


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
