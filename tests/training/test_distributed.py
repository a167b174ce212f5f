"""DDP on CPU: two gloo processes train together; compared with one process on the same global batch.

SyncBatchNorm needs CUDA, so on CPU each rank normalises with the statistics of its own half-batch:
the losses of the two runs agree within a tolerance, not bit for bit. Augmentation and dropout are
off so that both runs see the same pixels.
"""

import json
import socket

import pytest
import torch
import torch.multiprocessing as mp

from reidkit.config import load_config
from reidkit.data.synthetic import generate

pytestmark = pytest.mark.slow


def recipe(data_root, out, batch, num_ids):
    return load_config("demo_cpu", [
        f"data.root={data_root}", f"train.output_dir={out}", "data.height=64", "data.width=32",
        "data.num_workers=0", "data.val_ids=0", "data.flip_p=0", "data.erase_p=0", "data.pad=0",
        "model.options.num_stripes=3", "model.options.dropout=0", f"sampler.batch_size={batch}",
        f"sampler.num_ids={num_ids}", "sampler.num_instances=2", "train.epochs=1",
        "train.iters_per_epoch=4", "optim.warmup_epochs=0"])


def run_rank(rank, world_size, port, data_root, out):
    import os

    from reidkit.training.trainer import Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    trainer = Trainer(recipe(data_root, out, batch=8, num_ids=4))
    trainer.fit()
    torch.save(trainer.bare_model.state_dict(), f"{out}/rank{rank}.pt")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(path):
    return [json.loads(line)["id_loss"] for line in path.read_text().splitlines()
            if "id_loss" in line]


def test_two_gloo_processes_match_one_process(tmp_path):
    from reidkit.training.trainer import Trainer

    data_root = tmp_path / "data"
    generate(data_root, preset="tiny", num_train_ids=16, num_test_ids=2, images_per_id=4, seed=2)
    ddp_out = tmp_path / "ddp"
    mp.start_processes(run_rank, args=(2, free_port(), str(data_root), str(ddp_out)), nprocs=2,
                       start_method="spawn")
    replicas = [torch.load(ddp_out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # BN running statistics are per rank between DDP's buffer broadcasts; the weights are one
    for name, tensor in replicas[0].items():
        if "running_" not in name and "num_batches" not in name:
            torch.testing.assert_close(tensor, replicas[1][name], rtol=0, atol=0, msg=name)
    assert (ddp_out / "last.safetensors").is_file() and not (ddp_out / "rank1").exists()

    single = Trainer(recipe(data_root, tmp_path / "single", batch=16, num_ids=8))
    single.fit()
    ddp_losses = losses(ddp_out / "metrics.jsonl")
    single_losses = losses(tmp_path / "single" / "metrics.jsonl")
    assert len(ddp_losses) == len(single_losses) == 4
    # per-rank BatchNorm statistics (no SyncBN on CPU) are the only difference
    assert ddp_losses == pytest.approx(single_losses, rel=0.03)
