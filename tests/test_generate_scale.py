"""Memory over long generate runs: the loop keeps what demos and filters need, not the records.
Real scripted server on 127.0.0.1, real run directory (bench/bench_generate_scale.py measures
the RSS curve of a 100k-record run)."""

import asyncio
import gc

from datakit.config import load_config
from datakit.generate.loop import SelfInstruct
from datakit.records import Record
from datakit.runs import RunDir
from datakit.teachers.fake_server import FakeOpenAIServer, varied_responder
from datakit.teachers.pool import open_teachers


def test_loop_holds_no_records_after_rounds(tmp_path):
    cfg_path = tmp_path / "c.toml"
    with FakeOpenAIServer(responder=varied_responder) as srv:
        cfg_path.write_text(f'concurrency = 32\n[[teachers]]\nname = "s"\nbase_url = "{srv.base_url}"\n'
                            f'model = "fake"\n[generate]\nnum = 300\nrequests_per_round = 8\n'
                            f'rouge_tokenizer = "rouge"\n')
        cfg = load_config(str(cfg_path))
        run = RunDir(tmp_path / "run")
        run.prepare(cfg.snapshot(), "datakit generate")

        async def go():
            async with open_teachers(cfg, run.cache_path, log_dir=run.path) as pool:
                loop = SelfInstruct(cfg, run, pool)
                summary = await loop.run_all()
                gc.collect()
                held = sum(isinstance(o, Record) for o in gc.get_objects())
                return loop, summary, held

        loop, summary, held = asyncio.run(go())
    assert summary.accepted == 300 and summary.rounds >= 2
    # demos still come from every accepted task (id and instruction only)
    assert len(loop.machine) == 300 and loop.machine[0][0].startswith("g")
    assert held == 0  # old main: every accepted Record (lineage, verdicts, instances) stayed
