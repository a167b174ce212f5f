"""A Pyramid recipe small enough for a training step in a test: 64x32 input, batches of 4 x 2."""

from reidkit.config import Config, load_config


def tiny_pyramid_config(data_root, out, *extra: str) -> Config:
    return load_config("demo_cpu", [
        f"data.root={data_root}", f"train.output_dir={out}", "data.height=64", "data.width=32",
        "data.num_workers=0", "data.val_ids=2", "model.options.num_stripes=3",
        "sampler.batch_size=8", "sampler.num_ids=4", "sampler.num_instances=2",
        "train.epochs=2", "train.iters_per_epoch=3", "train.eval_every=1",
        "optim.warmup_epochs=0", *extra])
