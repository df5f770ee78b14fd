# Types of rselectors: the standard library's selectors signatures
# (typeshed's selectors.pyi), so that code typed against `selectors`
# type-checks with `import rselectors as selectors`. The constants, keys and
# base class are the standard library's own objects; every class here is a
# selectors.BaseSelector, as at run time.
import sys
from _typeshed import FileDescriptorLike, Unused
from collections.abc import Mapping
from selectors import EVENT_READ as EVENT_READ
from selectors import EVENT_WRITE as EVENT_WRITE
from selectors import BaseSelector as BaseSelector
from selectors import SelectorKey as SelectorKey
from typing import Any
from typing_extensions import Self

__all__ = [
    "EVENT_READ",
    "EVENT_WRITE",
    "SelectorKey",
    "BaseSelector",
    "DefaultSelector",
    "SelectSelector",
    "PollSelector",
    "EpollSelector",
    "DevpollSelector",
    "KqueueSelector",
]

# Not a class at run time: the native base of every selector class.
class _RustSelector(BaseSelector):
    def register(self, fileobj: FileDescriptorLike, events: int, data: Any = None) -> SelectorKey: ...
    def unregister(self, fileobj: FileDescriptorLike) -> SelectorKey: ...
    def modify(self, fileobj: FileDescriptorLike, events: int, data: Any = None) -> SelectorKey: ...
    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]: ...
    def close(self) -> None: ...
    def get_key(self, fileobj: FileDescriptorLike) -> SelectorKey: ...
    def get_map(self) -> Mapping[FileDescriptorLike, SelectorKey]: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *args: Unused) -> None: ...

# Each class where the standard library's stubs have it (at run time: where
# the platform has the backend, as the standard library).
class SelectSelector(_RustSelector): ...

if sys.platform != "win32":
    class PollSelector(_RustSelector): ...

if sys.platform == "linux":
    class EpollSelector(_RustSelector):
        def fileno(self) -> int: ...

if sys.platform != "linux" and sys.platform != "darwin" and sys.platform != "win32":
    class DevpollSelector(_RustSelector):
        def fileno(self) -> int: ...

if sys.platform != "win32" and sys.platform != "linux":
    class KqueueSelector(_RustSelector):
        def fileno(self) -> int: ...

# At run time the platform's best class (EpollSelector on Linux), as in the
# standard library, whose stubs also declare it as a class of its own.
class DefaultSelector(_RustSelector):
    if sys.platform != "win32":
        def fileno(self) -> int: ...
