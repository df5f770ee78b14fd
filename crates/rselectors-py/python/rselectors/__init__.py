"""High-level I/O multiplexing on a Rust core: the standard library's
``selectors`` module, the same API and behaviour, faster.

Replace ``import selectors`` with ``import rselectors as selectors``.

The hot paths (``register``, ``unregister``, ``modify``, ``select``,
``get_key``) are single calls into the native class
``rselectors._rselectors._Selector``; ``select()`` releases the GIL while it
waits, and other threads may register, unregister, read the map or close
meanwhile. Keys are the standard library's own ``selectors.SelectorKey``
named tuples, and every selector class is a ``selectors.BaseSelector``.
"""

from collections.abc import ItemsView as _ItemsView
from collections.abc import KeysView as _KeysView
from collections.abc import Mapping as _Mapping
from collections.abc import ValuesView as _ValuesView
from selectors import EVENT_READ, EVENT_WRITE, BaseSelector, SelectorKey

from . import _rselectors

__all__ = [
    "EVENT_READ",
    "EVENT_WRITE",
    "SelectorKey",
    "BaseSelector",
    "DefaultSelector",
    # and the class of each backend this platform has (below)
]


_MISSING = object()


class _SnapshotKeys(_KeysView):
    """``get_map().keys()``: iterates over a snapshot of the descriptors,
    taken in one native call; ``in`` is the mapping's own (native)."""

    __slots__ = ()

    def __iter__(self):
        return iter(self._mapping._selector._fds())


class _SnapshotValues(_ValuesView):
    """``get_map().values()``: iterates over a snapshot, taken in one native
    call (another thread may register or unregister meanwhile)."""

    __slots__ = ()

    def __iter__(self):
        return iter(self._mapping._selector._keys())


class _SnapshotItems(_ItemsView):
    """``get_map().items()``: ``(fd, key)`` pairs of a snapshot."""

    __slots__ = ()

    def __iter__(self):
        return iter([(key.fd, key) for key in self._mapping._selector._keys()])


class _SelectorMapping(_Mapping):
    """Mapping of file objects to selector keys (``get_map()``).

    Every method the standard library's mapping has, from
    ``collections.abc.Mapping`` or its own: each lookup is one native call
    (``[]``, ``get``, ``in``; no KeyError raised and caught), each view
    iterates over a snapshot taken in one; ``==`` is ``Mapping``'s.
    """

    # `get` is the selector's native method itself, set per mapping: no
    # Python frame on asyncio's hot call (3.13 on: every add_reader and
    # remove_reader).
    __slots__ = ("_selector", "get")

    def __init__(self, selector):
        self._selector = selector
        self.get = selector._get_key

    def __len__(self):
        return self._selector._count()

    def __getitem__(self, fileobj):
        return self._selector._lookup_key(fileobj)

    def __contains__(self, fileobj):
        return self._selector._get_key(fileobj, _MISSING) is not _MISSING

    def __iter__(self):
        return iter(self._selector._fds())

    def keys(self):
        return _SnapshotKeys(self)

    def values(self):
        return _SnapshotValues(self)

    def items(self):
        return _SnapshotItems(self)


class _RustSelector(_rselectors._Selector, BaseSelector):
    """A selector over the backend named by ``_backend``.

    ``register``, ``unregister``, ``modify``, ``select``, ``get_key`` and the
    native half of ``close`` come from ``_rselectors._Selector``.
    """

    _backend = "default"

    def __init__(self):
        # Read-only mapping returned by get_map(); None once closed, as in
        # CPython.
        self._map = _SelectorMapping(self)

    def get_map(self):
        """Return a mapping of file objects to selector keys."""
        return self._map

    def close(self):
        """Close the selector; every later call but close() raises
        RuntimeError."""
        super().close()
        self._map = None

    def _key_from_fd(self, fd):
        """The key registered for ``fd``, or None (CPython's private helper)."""
        return self._get_key(fd)


# CPython's class for each backend, with its docstring: a class exists
# exactly where the standard library has it, that is for the backends this
# platform has (the core's BACKENDS). Those over a kernel object (epoll,
# /dev/poll, kqueue) have fileno(), as CPython's.
_CLASSES = (
    # name, backend, docstring, fileno()
    ("SelectSelector", "select", "Select-based selector.", False),
    ("PollSelector", "poll", "Poll-based selector.", False),
    ("EpollSelector", "epoll", "Epoll-based selector.", True),
    ("DevpollSelector", "devpoll", "Solaris /dev/poll selector.", True),
    ("KqueueSelector", "kqueue", "Kqueue-based selector.", True),
)


def _define_classes():
    """Defines the classes of ``_CLASSES`` this platform has, in this
    module and in ``__all__``; returns them by backend name."""
    classes = {}
    for name, backend, doc, has_fileno in _CLASSES:
        if backend not in _rselectors.BACKENDS:
            continue
        namespace = {"__doc__": doc, "__module__": __name__, "_backend": backend}
        if has_fileno:
            namespace["fileno"] = _rselectors._Selector._fileno
        # The metaclass of _RustSelector (BaseSelector's ABCMeta) builds it.
        cls = type(_RustSelector)(name, (_RustSelector,), namespace)
        globals()[name] = cls
        __all__.append(name)
        classes[backend] = cls
    return classes


# The core's default is CPython's choice: epoll, devpoll, kqueue, poll,
# select, the first the platform has (no platform has kqueue beside epoll
# or /dev/poll, so CPython's order, kqueue first, picks the same).
DefaultSelector = _define_classes()[_rselectors.DEFAULT_BACKEND]
