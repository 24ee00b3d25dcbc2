"""Which request the running code serves, and telling the agent.

The current request id lives in a context variable, so each thread and each
asyncio task sees its own: asyncio tasks start with a copy of their creator's
context, threads start empty (see the README for carrying it into
executors). Every integration of this package reads it through
:func:`current_request_id`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import secrets
import sys
from typing import Any, Callable, Generator, Optional, TypeVar, Union, cast

from ._control import CONTROL

#: The longest request id the agent accepts, in bytes of UTF-8.
MAX_REQUEST_ID_BYTES = 256
#: The longest error text sent with a failed request; a longer one keeps its
#: start and end. The agent takes up to 1 MiB per command, but an error is
#: read by people in a table.
MAX_ERROR_CHARS = 4096

_current: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("tailwater_request_id", default=None)

F = TypeVar("F", bound=Callable[..., Any])
RequestId = Union[str, int]


def current_request_id() -> Optional[str]:
    """The id of the request this code serves, or `None` outside one."""
    return _current.get()


def ready() -> bool:
    """Tells the agent the worker is ready (the model is loaded). Returns
    whether an agent took note; `False`, silently, when not under one."""
    answer = CONTROL.send({"ready": True})
    return bool(answer and answer.get("ok") is True)


def check_id(request_id: Any) -> str:
    """A request id as the agent takes it: text (an int is taken as its
    digits) of 1 to 256 bytes. Raises `ValueError` for anything else, at the
    call that named it, rather than losing the request's marks later."""
    if isinstance(request_id, bool) or not isinstance(request_id, (str, int)):
        raise ValueError(f"a request id is a string (or an int), not {type(request_id).__name__}")
    text = str(request_id)
    size = len(text.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_REQUEST_ID_BYTES:
        raise ValueError(
            f"a request id is 1 to {MAX_REQUEST_ID_BYTES} bytes of text, not {size}: "
            "pass the job's id, or none for a new one"
        )
    return text


def new_id() -> str:
    """A fresh id, in the shape the agent's proxy gives requests."""
    return "req-" + secrets.token_hex(8)


def cut_middle(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text`, or its start and end around a note of what was left out."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n...TRUNCATED {len(text) - limit} CHARACTERS...\n{text[-half:]}"


def describe(error: BaseException) -> str:
    """An exception as a request's error: its type and message."""
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _flush_output() -> None:
    # The agent answers a mark once the lines written before it are
    # recorded: lines still in Python's buffers are not written yet.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


class Request:
    """One request, marked at the agent while its block runs.

    Use it as a context manager (`with` or `async with`), or through
    :func:`request` as a decorator. Inside, :func:`current_request_id` is its
    id. Set :attr:`status` (an HTTP status, 100-999) or :attr:`error` before
    the block ends to report them; an exception leaving the block is the
    error (and is raised on). After the block, :attr:`duration_ms` is the
    agent's measure (`None` when not under an agent).

    One `Request` is one request: it may be entered once.
    """

    def __init__(self, request_id: Optional[RequestId] = None) -> None:
        self.id: str = new_id() if request_id is None else check_id(request_id)
        self._status: Optional[int] = None
        self.error: Optional[str] = None
        self.duration_ms: Optional[int] = None
        self._token: Optional[contextvars.Token[Optional[str]]] = None
        self._entered = False

    def __repr__(self) -> str:
        return f"Request({self.id!r})"

    @property
    def status(self) -> Optional[int]:
        """The HTTP status to end the request with, or `None`."""
        return self._status

    @status.setter
    def status(self, status: Optional[int]) -> None:
        # Checked here, where the mistake is made: the agent would refuse
        # the whole end, and the request would stay in flight.
        valid = isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 999
        if status is not None and not valid:
            raise ValueError(f"a request's status is an HTTP status, a number from 100 to 999, not {status!r}")
        self._status = status

    # The marks, sent from whichever thread runs them.

    def _start(self) -> None:
        _flush_output()
        CONTROL.send({"request_start": self.id})

    def _end(self) -> None:
        _flush_output()
        command: dict[str, Any] = {"request_end": self.id}
        if self._status is not None:
            command["status"] = self._status
        if self.error is not None:
            command["error"] = cut_middle(str(self.error))
        answer = CONTROL.send(command)
        if answer and answer.get("ok") is True:
            duration = answer.get("duration_ms")
            self.duration_ms = duration if isinstance(duration, int) else None

    def _enter(self) -> None:
        if self._entered:
            raise RuntimeError(f"request {self.id} was already entered: make a new tailwater.request for each request")
        self._entered = True
        self._token = _current.set(self.id)

    def _exit(self, error: Optional[BaseException]) -> None:
        # A generator closed before its end was stopped by its consumer,
        # which is no failure of the request.
        if error is not None and self.error is None and not isinstance(error, GeneratorExit):
            self.error = describe(error)
        token, self._token = self._token, None
        if token is not None:
            try:
                _current.reset(token)
            except ValueError:
                # Left in another context than it was entered in (a
                # generator closed elsewhere): nothing of ours to restore.
                pass

    # The protocols.

    def __enter__(self) -> Request:
        self._enter()
        self._start()
        return self

    def __exit__(self, kind: Any, error: Optional[BaseException], traceback: Any) -> None:
        self._exit(error)
        self._end()

    async def __aenter__(self) -> Request:
        self._enter()
        loop = asyncio.get_running_loop()
        # The round trip blocks: other tasks run meanwhile.
        started = loop.run_in_executor(None, self._start)
        try:
            await asyncio.shield(started)
        except BaseException as error:
            # Cancelled while the start was on its way: the block will not
            # run, nor `__aexit__`. Restore the id, and end the request once
            # its start is through (in the background: this task is going).
            self._exit(error)
            started.add_done_callback(lambda _: loop.run_in_executor(None, self._end))
            raise
        return self

    async def __aexit__(self, kind: Any, error: Optional[BaseException], traceback: Any) -> None:
        self._exit(error)
        await asyncio.get_running_loop().run_in_executor(None, self._end)


#: How a decorated function's call names its request: the id, or a function
#: of the call's arguments that returns it.
IdOf = Callable[..., Optional[RequestId]]
#: Looks at what a decorated call returned (or each item it yielded) and
#: returns an error to report, or `None`.
Check = Callable[[Any], Optional[str]]


def _in_own_context(scope: Request, inner: Generator[Any, Any, Any], checked: Callable[[Request, Any], Any]) -> Any:
    """Runs the generator `inner` as `scope`, each step in a context of its
    own: its request is current in its body and never in the code that
    iterates it, whichever thread runs each step (a thread pool may run
    each on another) and however it is interleaved with other generators.
    Sent values, thrown exceptions and closing are passed on."""
    context = contextvars.copy_context()
    context.run(scope.__enter__)
    failure: Optional[BaseException] = None
    try:
        step: Callable[[Any], Any] = inner.send
        value: Any = None
        while True:
            try:
                item = context.run(step, value)
            except StopIteration as stop:
                return stop.value
            try:
                value = yield checked(scope, item)
                step = inner.send
            except GeneratorExit:
                context.run(inner.close)
                raise
            except BaseException as thrown:
                step, value = inner.throw, thrown
    except BaseException as error:
        failure = error
        raise
    finally:
        context.run(scope.__exit__, type(failure), failure, None)


def wrap(fn: F, id_of: IdOf, check: Optional[Check] = None) -> F:
    """`fn`, each call of it a :class:`Request` named by `id_of(*args,
    **kwargs)`. Keeps `fn`'s kind (function, coroutine function, generator
    or async generator function), as frameworks (RunPod's among them) look
    at the kind to decide how to call it."""

    def open_request(args: Any, kwargs: Any) -> Request:
        return Request(id_of(*args, **kwargs))

    def checked(scope: Request, value: Any) -> Any:
        if check is not None and scope.error is None:
            scope.error = check(value)
        return value

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def async_gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            async with open_request(args, kwargs) as scope:
                async for item in fn(*args, **kwargs):
                    yield checked(scope, item)

        return cast(F, async_gen_wrapper)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = open_request(args, kwargs)
            return (yield from _in_own_context(scope, fn(*args, **kwargs), checked))

        return cast(F, gen_wrapper)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            async with open_request(args, kwargs) as scope:
                return checked(scope, await fn(*args, **kwargs))

        return cast(F, async_wrapper)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with open_request(args, kwargs) as scope:
            return checked(scope, fn(*args, **kwargs))

    return cast(F, wrapper)


class request:  # noqa: N801 - used as a function and a decorator, named as one
    """Marks a request: `with tailwater.request(job_id):`, `async with
    tailwater.request(job_id):`, or as a decorator of a function, coroutine
    function, generator or async generator.

    `request_id` is the id (a string, or an int taken as its digits, of 1 to
    256 bytes), `None` for a new `req-…` id each time, or (decorators only)
    a function of the call's arguments that returns the id, such as
    `lambda job: job["id"]`.
    """

    def __init__(self, request_id: Union[RequestId, IdOf, None] = None) -> None:
        if callable(request_id):
            self._id_of: IdOf = request_id
            self._scope: Optional[Request] = None
        else:
            fixed = None if request_id is None else check_id(request_id)
            self._id_of = lambda *args, **kwargs: fixed
            self._scope = Request(fixed)

    def _entered_scope(self) -> Request:
        if self._scope is None:
            raise TypeError(
                "a request named by a function of the call's arguments is a decorator: "
                "use `with tailwater.request(job_id):` for a block"
            )
        return self._scope

    def __call__(self, fn: F) -> F:
        return wrap(fn, self._id_of)

    def __enter__(self) -> Request:
        return self._entered_scope().__enter__()

    def __exit__(self, kind: Any, error: Optional[BaseException], traceback: Any) -> None:
        self._entered_scope().__exit__(kind, error, traceback)

    async def __aenter__(self) -> Request:
        return await self._entered_scope().__aenter__()

    async def __aexit__(self, kind: Any, error: Optional[BaseException], traceback: Any) -> None:
        await self._entered_scope().__aexit__(kind, error, traceback)
