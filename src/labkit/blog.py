"""The course's demo schema: a blog with users, posts and comments (SQLAlchemy 2 ORM).

Usage::

    from sqlalchemy.orm import Session
    from labkit.blog import User, Post, Comment
    with Session(engine) as session:
        session.scalars(select(User).limit(5)).all()

Deliberately, the only indexes are the primary keys and the unique e-mail: the
lessons add the others and measure what each one buys.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = ["Base", "Comment", "Post", "User"]


class Base(DeclarativeBase):
    """The declarative base of the blog models (``Base.metadata`` holds the three tables)."""


class User(Base):
    """A blog user; ``posts`` and ``comments`` are the ones they wrote."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    country: Mapped[str] = mapped_column(String(2))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    posts: Mapped[list[Post]] = relationship(back_populates="author")
    comments: Mapped[list[Comment]] = relationship(back_populates="author")

    def __repr__(self) -> str:
        return f"User(id={self.id}, name={self.name!r})"


class Post(Base):
    """A post by ``author``, with its ``comments``."""

    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    published: Mapped[bool] = mapped_column(Boolean)
    view_count: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    author: Mapped[User] = relationship(back_populates="posts")
    comments: Mapped[list[Comment]] = relationship(back_populates="post")

    def __repr__(self) -> str:
        return f"Post(id={self.id}, author_id={self.author_id}, title={self.title!r})"


class Comment(Base):
    """A comment by ``author`` on ``post``."""

    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id"))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    post: Mapped[Post] = relationship(back_populates="comments")
    author: Mapped[User] = relationship(back_populates="comments")

    def __repr__(self) -> str:
        return f"Comment(id={self.id}, post_id={self.post_id})"
