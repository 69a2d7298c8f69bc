"""The context shared by recording and deactivation: forward hooks that never outlive it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import nn


class ForwardHooks:
    """Registers ``_forward_hooks()`` when entered; removes them all on exit, also after an exception."""

    _handles: list | None = None

    def _forward_hooks(self) -> Iterator[tuple[nn.Module, Callable]]:
        raise NotImplementedError

    def _busy_error(self) -> Exception:
        """The error for entering a context that is already open."""
        return RuntimeError(f"this {type(self).__name__} is already active")

    def __enter__(self):
        if self._handles:
            raise self._busy_error()
        self._handles = []
        try:
            for module, hook in self._forward_hooks():
                self._handles.append(module.register_forward_hook(hook))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles or ():
            handle.remove()
        self._handles = []
