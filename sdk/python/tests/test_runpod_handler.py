"""tailwater.runpod_handler, run by runpod's own job runner (`run_job`,
`run_job_generator`): each job is a request named by its id, failed when
RunPod counts it failed."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import pytest
from conftest import FakeAgent
from runpod.serverless.modules import rp_job

import tailwater


def run(handler: Any, job: Dict[str, Any]) -> Dict[str, Any]:
    return asyncio.run(rp_job.run_job(handler, job))


def stream(handler: Any, job: Dict[str, Any]) -> List[Dict[str, Any]]:
    async def collect() -> List[Dict[str, Any]]:
        return [item async for item in rp_job.run_job_generator(handler, job)]

    return asyncio.run(collect())


def ends(agent: FakeAgent) -> List[Dict[str, Any]]:
    return [command for command in agent.commands if "request_end" in command]


def test_each_job_is_its_request(agent: FakeAgent) -> None:
    @tailwater.runpod_handler
    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        return {"echo": job["input"], "request": tailwater.current_request_id()}

    assert run(handler, {"id": "job-1", "input": 3}) == {"output": {"echo": 3, "request": "job-1"}}
    assert agent.commands[0] == {"request_start": "job-1"}
    assert ends(agent) == [{"request_end": "job-1"}]


def test_a_job_that_raises_or_returns_an_error_failed(agent: FakeAgent) -> None:
    @tailwater.runpod_handler
    def raises(job: Dict[str, Any]) -> None:
        raise ValueError("no prompt")

    @tailwater.runpod_handler
    async def returns_error(job: Dict[str, Any]) -> Dict[str, Any]:
        return {"error": "bad size"}

    assert "no prompt" in run(raises, {"id": "job-2", "input": {}})["error"]
    assert run(returns_error, {"id": "job-3", "input": {}}) == {"error": "bad size"}
    assert ends(agent) == [
        {"request_end": "job-2", "error": "ValueError: no prompt"},
        {"request_end": "job-3", "error": "bad size"},
    ]


def test_streaming_handlers_are_one_request_each(agent: FakeAgent) -> None:
    @tailwater.runpod_handler
    def tokens(job: Dict[str, Any]) -> Any:
        for token in ("a", "b"):
            yield {"token": token, "request": tailwater.current_request_id()}

    @tailwater.runpod_handler
    async def failing(job: Dict[str, Any]) -> Any:
        yield {"token": "a"}
        yield {"error": "model crashed"}

    got = stream(tokens, {"id": "job-4", "input": {}})
    assert got == [{"output": {"token": t, "request": "job-4"}} for t in ("a", "b")]
    stream(failing, {"id": "job-5", "input": {}})
    assert ends(agent) == [{"request_end": "job-4"}, {"request_end": "job-5", "error": "model crashed"}]


def test_concurrent_async_jobs_keep_their_ids(agent: FakeAgent) -> None:
    @tailwater.runpod_handler
    async def handler(job: Dict[str, Any]) -> str:
        await asyncio.sleep(0.01 * job["input"])
        return str(tailwater.current_request_id())

    async def both() -> List[Dict[str, Any]]:
        return await asyncio.gather(
            rp_job.run_job(handler, {"id": "slow", "input": 3}),
            rp_job.run_job(handler, {"id": "fast", "input": 1}),
        )

    assert asyncio.run(both()) == [{"output": "slow"}, {"output": "fast"}]


@pytest.mark.parametrize("job", [{"input": 1}, {"id": "", "input": 1}, {"id": None}, "not a job", {"id": "x" * 300}])
def test_a_job_without_a_usable_id_still_runs(agent: FakeAgent, job: Any, capsys: Any) -> None:
    @tailwater.runpod_handler
    def handler(job: Any) -> str:
        return str(tailwater.current_request_id())

    assert handler(job).startswith("req-")
    assert "a RunPod job's id (job['id']) is unusable" in capsys.readouterr().err
