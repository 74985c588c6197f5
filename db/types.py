"""Column types: UTC datetimes and string enums that behave the same on SQLite and PostgreSQL."""

from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import DateTime, Dialect, String
from sqlalchemy.types import TypeDecorator

from db.clock import as_utc

E = TypeVar("E", bound=StrEnum)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetime.

    PostgreSQL stores ``timestamptz``. SQLite has no time zones, so values are stored as naive UTC
    and get their UTC ``tzinfo`` back on load. Naive input is taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC (naive for SQLite)."""
        if value is None:
            return None
        value = as_utc(value)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        return as_utc(value)


class StrEnumType(TypeDecorator[E], Generic[E]):
    """A string ``Enum`` stored by value in a plain ``VARCHAR`` (no native PostgreSQL enum)."""

    impl = String
    cache_ok = True

    def __init__(self, enum_class: type[E], length: int = 16) -> None:
        """Build the type.

        Args:
            enum_class: The enum stored in the column.
            length: Length of the ``VARCHAR``.
        """
        longest = max(len(member.value) for member in enum_class)
        if longest > length:
            raise ValueError(
                f"The enum {enum_class.__name__} has a value of {longest} characters, "
                f"longer than the column length {length}."
            )
        super().__init__(length)
        self.enum_class = enum_class

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        """Store the enum value; strings are validated against the enum."""
        if value is None:
            return None
        return self.enum_class(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        """Load the stored value as the enum member."""
        if value is None:
            return None
        return self.enum_class(value)

    @property
    def python_type(self) -> type[E]:
        """The enum class."""
        return self.enum_class
