import torch
from torch.utils.data import Dataset

from reidkit.training.streams import BatchStream, sample_seed


class CountingSampler:
    """Batches of consecutive indices, rotated by the epoch, 3 batches of 2 per epoch."""

    def __init__(self):
        self.epoch, self.start = 0, 0

    def __len__(self):
        return 3

    def set_epoch(self, epoch):
        self.epoch = epoch

    def set_start(self, batch_index):
        self.start = batch_index

    def __iter__(self):
        for b in range(self.start, 3):
            yield [(2 * b + self.epoch) % 6, (2 * b + 1 + self.epoch) % 6]


class NoisyDataset(Dataset):
    """Returns its index and a draw from torch's global RNG (stands in for augmentation)."""

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return index, torch.rand(())


def draw(stream, n):
    return [(b[0].tolist(), b[1].tolist()) for b in (next(stream) for _ in range(n))]


def test_stream_crosses_epochs_and_counts():
    stream = BatchStream(NoisyDataset(), CountingSampler(), seed=1, stream_id=0)
    batches = draw(stream, 4)
    assert [b[0] for b in batches] == [[0, 1], [2, 3], [4, 5], [1, 2]]  # epoch 1 is rotated
    assert stream.state_dict() == {"epoch": 1, "position": 1}


def test_resumed_stream_draws_the_same_batches_and_augmentation():
    full = draw(BatchStream(NoisyDataset(), CountingSampler(), seed=3, stream_id=1), 8)
    first = BatchStream(NoisyDataset(), CountingSampler(), seed=3, stream_id=1)
    draw(first, 5)
    resumed = BatchStream(NoisyDataset(), CountingSampler(), seed=3, stream_id=1)
    resumed.load_state_dict(first.state_dict())
    assert draw(resumed, 3) == full[5:]
    # the per-sample seed, not the worker layout, decides the random draws
    workers = BatchStream(NoisyDataset(), CountingSampler(), seed=3, stream_id=1, num_workers=2)
    assert draw(workers, 8) == full


def test_streams_leave_the_global_rng_alone_and_differ_by_id():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    a = draw(BatchStream(NoisyDataset(), CountingSampler(), seed=3, stream_id=0), 2)
    assert torch.equal(torch.rand(3), expected)
    b = draw(BatchStream(NoisyDataset(), CountingSampler(), seed=3, stream_id=1), 2)
    assert [x[0] for x in a] == [x[0] for x in b] and a != b


def test_sample_seed_depends_on_every_part_and_order():
    seeds = {sample_seed(1, 2, 3), sample_seed(1, 3, 2), sample_seed(2, 2, 3), sample_seed(1, 2, 4)}
    assert len(seeds) == 4
    assert sample_seed(1, 2, 3) == sample_seed(1, 2, 3)
    assert 0 <= sample_seed(-5, 2**40) < 2**63
