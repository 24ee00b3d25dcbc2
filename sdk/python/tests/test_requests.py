"""tailwater.request and tailwater.ready against a stand-in agent: what is
sent, in which order, from threads and tasks; and what happens without an
agent, or with one that fails."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, List, Optional

import pytest
from conftest import FakeAgent

import tailwater
from tailwater import _control


def test_a_block_is_marked_and_its_id_is_current(agent: FakeAgent) -> None:
    assert tailwater.current_request_id() is None
    with tailwater.request("job-1") as scope:
        assert tailwater.current_request_id() == "job-1"
        assert agent.commands == [{"request_start": "job-1"}]
        scope.status = 201
    assert tailwater.current_request_id() is None
    assert agent.commands[1] == {"request_end": "job-1", "status": 201}
    assert scope.duration_ms == 7


def test_an_exception_is_the_error_and_goes_on(agent: FakeAgent) -> None:
    with pytest.raises(KeyError):
        with tailwater.request(42):
            raise KeyError("prompt")
    assert agent.commands == [{"request_start": "42"}, {"request_end": "42", "error": "KeyError: 'prompt'"}]


def test_a_long_error_keeps_its_start_and_end(agent: FakeAgent) -> None:
    with tailwater.request("r") as scope:
        scope.error = "<" + "x" * 10_000 + ">"
    sent = agent.commands[1]["error"]
    assert sent.startswith("<x") and sent.endswith("x>") and "...TRUNCATED 5906 CHARACTERS..." in sent


def test_requests_nest(agent: FakeAgent) -> None:
    with tailwater.request("outer"):
        with tailwater.request("inner"):
            assert tailwater.current_request_id() == "inner"
        assert tailwater.current_request_id() == "outer"
    assert agent.verbs() == ["request_start=outer", "request_start=inner", "request_end=inner", "request_end=outer"]


def test_no_id_is_a_new_one_each_time(agent: FakeAgent) -> None:
    seen: List[Optional[str]] = []

    @tailwater.request()
    def handle() -> None:
        seen.append(tailwater.current_request_id())

    handle()
    handle()
    assert seen[0] != seen[1]
    assert all(id_ is not None and id_.startswith("req-") and len(id_) == 20 for id_ in seen)


@pytest.mark.parametrize("bad", ["", "x" * 257, "\u00e9" * 129, [], 1.5, True, b"id"])
def test_unusable_ids_are_refused_where_they_are_named(bad: Any) -> None:
    with pytest.raises(ValueError, match="a request id is"):
        tailwater.request(bad)


def test_a_scope_is_entered_once(agent: FakeAgent) -> None:
    scope = tailwater.request("once")
    with scope:
        pass
    with pytest.raises(RuntimeError, match="already entered: make a new tailwater.request"):
        with scope:
            pass


def test_decorators_keep_the_kind_of_function(agent: FakeAgent) -> None:
    def plain(job: dict) -> str:
        return str(tailwater.current_request_id())

    async def coroutine(job: dict) -> str:
        await asyncio.sleep(0)
        return str(tailwater.current_request_id())

    def generator(job: dict) -> Any:
        yield tailwater.current_request_id()
        yield tailwater.current_request_id()

    async def async_generator(job: dict) -> Any:
        yield tailwater.current_request_id()
        await asyncio.sleep(0)
        yield tailwater.current_request_id()

    by_job = tailwater.request(lambda job: job["id"])
    wrapped = [by_job(f) for f in (plain, coroutine, generator, async_generator)]
    assert inspect.isfunction(wrapped[0]) and not inspect.iscoroutinefunction(wrapped[0])
    assert inspect.iscoroutinefunction(wrapped[1])
    assert inspect.isgeneratorfunction(wrapped[2])
    assert inspect.isasyncgenfunction(wrapped[3])
    assert wrapped[0].__name__ == "plain"

    async def collect(gen: Any) -> List[Any]:
        return [item async for item in gen]

    assert wrapped[0]({"id": "a"}) == "a"
    assert asyncio.run(wrapped[1]({"id": "b"})) == "b"
    assert list(wrapped[2]({"id": "c"})) == ["c", "c"]
    assert asyncio.run(collect(wrapped[3]({"id": "d"}))) == ["d", "d"]
    assert agent.verbs() == [f"request_{edge}={id_}" for id_ in "abcd" for edge in ("start", "end")]
    assert tailwater.current_request_id() is None


def test_a_generator_stopped_early_did_not_fail(agent: FakeAgent) -> None:
    @tailwater.request("stream")
    def tokens() -> Any:
        yield from range(10)

    stream = tokens()
    assert next(stream) == 0
    stream.close()
    assert agent.commands[-1] == {"request_end": "stream"}


def test_a_function_id_names_only_decorators() -> None:
    with pytest.raises(TypeError, match="is a decorator"):
        with tailwater.request(lambda job: job["id"]):
            pass


def test_threads_each_have_their_request(agent: FakeAgent) -> None:
    both_in = threading.Barrier(8)
    seen = {}

    def serve(n: int) -> None:
        with tailwater.request(f"t{n}"):
            both_in.wait(10)
            seen[n] = tailwater.current_request_id()

    threads = [threading.Thread(target=serve, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {n: f"t{n}" for n in range(8)}
    # One shared connection: every answer matched its command.
    assert agent.connections == 1
    assert sorted(agent.verbs()) == sorted(f"request_{e}=t{n}" for n in range(8) for e in ("start", "end"))


def test_tasks_each_have_their_request_and_share_it_with_their_children(agent: FakeAgent) -> None:
    async def child() -> Optional[str]:
        return tailwater.current_request_id()

    arrived: List[int] = []

    async def serve(n: int, both_in: asyncio.Event) -> Any:
        async with tailwater.request(f"a{n}"):
            arrived.append(n)
            if len(arrived) == 2:
                both_in.set()
            await both_in.wait()
            in_task = await asyncio.create_task(child())
            in_thread = await asyncio.to_thread(tailwater.current_request_id)
            # run_in_executor does not carry the context; a copy does.
            loop = asyncio.get_running_loop()
            bare = await loop.run_in_executor(None, tailwater.current_request_id)
            copied = await loop.run_in_executor(None, contextvars.copy_context().run, tailwater.current_request_id)
            return tailwater.current_request_id(), in_task, in_thread, bare, copied

    async def main() -> Any:
        both_in = asyncio.Event()
        return await asyncio.gather(serve(1, both_in), serve(2, both_in))

    assert asyncio.run(main()) == [("a1", "a1", "a1", None, "a1"), ("a2", "a2", "a2", None, "a2")]


def test_a_thread_pool_gets_the_request_when_given_a_copy(agent: FakeAgent) -> None:
    with tailwater.request("pool"), ThreadPoolExecutor(2) as pool:
        bare = pool.submit(tailwater.current_request_id).result()
        copied = pool.submit(contextvars.copy_context().run, tailwater.current_request_id).result()
    assert (bare, copied) == (None, "pool")


def test_ready_tells_the_agent(agent: FakeAgent) -> None:
    assert tailwater.ready() is True
    assert agent.commands == [{"ready": True}]


def test_without_an_agent_everything_works_and_says_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert tailwater.ready() is False
    with tailwater.request("solo") as scope:
        assert tailwater.current_request_id() == "solo"
    assert scope.duration_ms is None
    assert capsys.readouterr().err == ""


def test_an_unreachable_agent_is_said_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("TAILWATER_CONTROL", str(tmp_path / "gone.sock"))
    assert tailwater.ready() is False
    for n in range(3):
        with tailwater.request(f"r{n}"):
            pass
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("WARNING: tailwater: cannot reach the agent's control socket")
    assert "requests and readiness are not marked until it answers again" in err


def test_a_dropped_connection_is_replaced(agent: FakeAgent, capsys: pytest.CaptureFixture[str]) -> None:
    assert tailwater.ready()
    agent.drop_connections()
    with tailwater.request("after"):
        pass
    assert agent.verbs()[-2:] == ["request_start=after", "request_end=after"]
    assert agent.connections == 2
    assert capsys.readouterr().err == ""


def test_an_agent_that_hangs_up_mid_answer_is_said_and_skipped(
    agent: FakeAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    agent.answer = lambda command: None
    assert tailwater.ready() is False
    assert "cannot reach the agent's control socket" in capsys.readouterr().err
    agent.answer = agent.default_answer
    assert tailwater.ready() is True


def test_a_slow_agent_times_out(agent: FakeAgent, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("TAILWATER_CONTROL_TIMEOUT", "0.2")
    release = threading.Event()

    def slow(command: Any) -> Any:
        release.wait(5)
        return {"ok": True}

    agent.answer = slow
    assert tailwater.ready() is False
    release.set()
    assert "timed out" in capsys.readouterr().err


def test_refusals_are_said(agent: FakeAgent, capsys: pytest.CaptureFixture[str]) -> None:
    agent.answer = lambda command: {"ok": False, "error": "request x is not in flight"}
    with tailwater.request("x"):
        pass
    err = capsys.readouterr().err
    assert "WARNING: tailwater: the agent refused request_start: request x is not in flight" in err
    assert "the agent refused request_end" in err


def test_a_bad_timeout_setting_is_said(agent: FakeAgent, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("TAILWATER_CONTROL_TIMEOUT", "soon")
    assert tailwater.ready() is True
    assert "TAILWATER_CONTROL_TIMEOUT must be a number of seconds above 0, not 'soon'" in capsys.readouterr().err


def test_a_forked_child_has_its_own_connection(agent: FakeAgent) -> None:
    assert tailwater.ready()
    pid = os.fork()
    if pid == 0:  # the child: exit at once, whatever happens
        code = 1
        try:
            with tailwater.request("child"):
                pass
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert agent.connections == 2
    assert agent.verbs()[1:] == ["request_start=child", "request_end=child"]
    with tailwater.request("parent"):
        pass
    assert agent.connections == 2
    assert _control.CONTROL is not None


def test_a_task_cancelled_while_starting_still_ends_its_request(agent: FakeAgent) -> None:
    answering = threading.Event()
    release = threading.Event()

    def slow_start(command: Any) -> Any:
        if "request_start" in command:
            answering.set()
            release.wait(5)
        return agent.default_answer(command)

    agent.answer = slow_start

    async def main() -> Optional[str]:
        async def serve() -> None:
            async with tailwater.request("cancelled"):
                pytest.fail("the block must not run")

        task = asyncio.create_task(serve())
        await asyncio.get_running_loop().run_in_executor(None, answering.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await asyncio.get_running_loop().run_in_executor(None, lambda: wait_until(lambda: len(agent.commands) == 2))
        return tailwater.current_request_id()

    assert asyncio.run(main()) is None
    assert agent.commands == [{"request_start": "cancelled"}, {"request_end": "cancelled", "error": "cancelled"}]


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_an_interrupted_round_trip_does_not_shift_answers(agent: FakeAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    agent.answer = lambda command: {"ok": True, "to": command}
    assert tailwater.ready()
    connection = _control.CONTROL._connection
    assert connection is not None

    def interrupted() -> bytes:
        raise KeyboardInterrupt

    monkeypatch.setattr(connection.reader, "readline", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _control.CONTROL.send({"request_start": "first"})
    # The answer to `first` is left unread on the old connection: the next
    # command must not take it for its own.
    assert _control.CONTROL.send({"request_start": "second"}) == {"ok": True, "to": {"request_start": "second"}}
    assert agent.connections == 2


def test_a_generator_has_its_request_whoever_runs_each_step(agent: FakeAgent) -> None:
    @tailwater.request(lambda name: name)
    def steps(name: str) -> Any:
        for _ in range(3):
            received = yield tailwater.current_request_id()
            assert received in (None, "sent")

    # Interleaved in one thread: each sees its own, the caller neither.
    a, b = steps("a"), steps("b")
    assert list(zip(a, b)) == [("a", "b")] * 3
    assert tailwater.current_request_id() is None
    assert list(b) == []  # zip stopped at the end of a
    # Each step on another thread of a pool, with no context copied.
    c = steps("c")
    with ThreadPoolExecutor(3) as pool:
        seen = [pool.submit(next, c).result(), pool.submit(c.send, "sent").result()]
        leaked = [pool.submit(tailwater.current_request_id).result() for _ in range(6)]
    assert seen == ["c", "c"] and leaked == [None] * 6
    with pytest.raises(ValueError):
        c.throw(ValueError("stop"))
    assert agent.commands[-1] == {"request_end": "c", "error": "ValueError: stop"}
    assert [c for c in agent.verbs() if c.startswith("request_end")] == [
        "request_end=a",
        "request_end=b",
        "request_end=c",
    ]


@pytest.mark.parametrize("bad", [99, 1000, "200", 200.0, True])
def test_a_status_that_is_no_http_status_is_refused_where_it_is_set(agent: FakeAgent, bad: Any) -> None:
    with tailwater.request("s") as scope:
        with pytest.raises(ValueError, match="a request's status is an HTTP status, a number from 100 to 999"):
            scope.status = bad
        scope.error = 3  # type: ignore[assignment]  # anything is taken as its text
    assert agent.commands[-1] == {"request_end": "s", "error": "3"}
