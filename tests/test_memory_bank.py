"""Regional memory bank: vectorised enqueue against one-entry-at-a-time writes, state and prototypes."""

import pytest
import torch

from rca_lightning.memory import RegionalMemoryBank, batched_kmeans, kmeans_init_indices
from rca_lightning.utils.errors import InvalidSetting
from tests.references import reference_enqueue, reference_kmeans


def _check_against_reference(
    bank: RegionalMemoryBank, calls: list[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    queue = bank.queue.clone()
    pointer = bank.pointer.clone()
    written = bank.valid_slots().clone()
    for embeddings, class_ids in calls:
        bank.enqueue(embeddings, class_ids)
        queue, pointer, written = reference_enqueue(
            queue, pointer, written, embeddings, class_ids, bank.update, bank.momentum
        )
        torch.testing.assert_close(bank.queue, queue, atol=1e-5, rtol=1e-5)
        assert torch.equal(bank.pointer, pointer)
        assert torch.equal(bank.valid_slots(), written)
        assert torch.equal(bank.count, written.sum(dim=1))


@pytest.mark.parametrize("update", ["ema", "replace"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_enqueue_matches_sequential_reference(update: str, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    num_classes, queue_length, dim = 4, 5, 3
    bank = RegionalMemoryBank(
        num_classes, dim, queue_length=queue_length, num_prototypes=2, update=update, momentum=0.7
    )
    bank.double()
    calls = []
    for size in (3, 7, 0, 4, 9, 6):  # several calls: partial fills, then wrap-around of the ring
        class_ids = torch.randint(0, num_classes - 1, (size,), generator=generator)  # class 3 never written
        calls.append((torch.randn(size, dim, generator=generator, dtype=torch.float64), class_ids))
    _check_against_reference(bank, calls)
    assert bank.count[3] == 0 and bank.pointer[3] == 0


@pytest.mark.parametrize("update", ["ema", "replace"])
def test_enqueue_more_than_queue_length_of_one_class_in_one_call(update: str) -> None:
    generator = torch.Generator().manual_seed(3)
    bank = RegionalMemoryBank(3, 2, queue_length=4, update=update, momentum=0.5).double()
    first = (torch.randn(2, 2, generator=generator, dtype=torch.float64), torch.tensor([0, 1]))
    class_ids = torch.tensor([0] * 11 + [1] * 3 + [2] * 9)[torch.randperm(23, generator=generator)]
    second = (torch.randn(23, 2, generator=generator, dtype=torch.float64), class_ids)
    third = (torch.randn(5, 2, generator=generator, dtype=torch.float64), torch.tensor([2, 2, 2, 2, 2]))
    _check_against_reference(bank, [first, second, third])
    assert bank.count.tolist() == [4, 4, 4]


def test_ema_never_blends_into_an_unwritten_slot() -> None:
    bank = RegionalMemoryBank(2, 2, queue_length=3, update="ema", momentum=0.9)
    bank.enqueue(torch.tensor([[1.0, 2.0]]), torch.tensor([1]))
    assert torch.equal(bank.queue[1, 0], torch.tensor([1.0, 2.0]))
    bank.enqueue(torch.tensor([[3.0, 3.0], [5.0, 5.0], [7.0, 7.0]]), torch.tensor([1, 1, 1]))
    # slots 1, 2 were empty (copied), slot 0 wraps around and blends
    torch.testing.assert_close(
        bank.queue[1, 0], 0.9 * torch.tensor([1.0, 2.0]) + 0.1 * torch.tensor([7.0, 7.0])
    )
    assert torch.equal(bank.queue[1, 1:], torch.tensor([[3.0, 3.0], [5.0, 5.0]]))
    assert bank.pointer.tolist() == [0, 1] and bank.count.tolist() == [0, 3]
    assert torch.equal(bank.fill_fraction(), torch.tensor([0.0, 1.0]))


def test_buffers_round_trip_through_state_dict() -> None:
    generator = torch.Generator().manual_seed(0)
    bank = RegionalMemoryBank(3, 4, queue_length=6, num_prototypes=2)
    bank.enqueue(torch.randn(10, 4, generator=generator), torch.randint(0, 3, (10,), generator=generator))
    bank.refresh_prototypes()
    state = bank.state_dict()
    assert set(state) == {"queue", "pointer", "count", "prototypes", "prototype_valid"}
    fresh = RegionalMemoryBank(3, 4, queue_length=6, num_prototypes=2)
    fresh.load_state_dict(state)
    for name, tensor in bank.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    assert fresh.prototype_valid.any()
    moved = fresh.to(torch.float64)
    assert moved.queue.dtype == torch.float64 and moved.pointer.dtype == torch.long


def test_refresh_prototypes_with_one_random_start_matches_reference_kmeans() -> None:
    generator = torch.Generator().manual_seed(1)
    banks = [
        RegionalMemoryBank(
            4,
            3,
            queue_length=8,
            num_prototypes=3,
            kmeans_iters=4,
            kmeans_init="random",
            kmeans_restarts=1,
            seed=5,
        )
        for _ in range(2)
    ]
    embeddings = torch.randn(20, 3, generator=generator)
    class_ids = torch.tensor([0] * 9 + [1] * 2 + [2] * 9)  # class 1 has fewer entries than K, class 3 none
    for bank in banks:
        bank.enqueue(embeddings, class_ids)
    prototypes, prototype_valid = banks[0].refresh_prototypes(seed_offset=2)
    banks[1].refresh_prototypes(seed_offset=2)
    assert torch.equal(banks[0].prototypes, banks[1].prototypes)
    assert prototype_valid.tolist() == [[True] * 3, [True, True, False], [True] * 3, [False] * 3]

    valid = banks[0].valid_slots()
    init_indices = kmeans_init_indices(valid, 3, torch.Generator().manual_seed(5 + 2))
    expected, _ = reference_kmeans(banks[0].queue.double(), valid, 3, 4, init_indices)
    torch.testing.assert_close(prototypes.double(), expected, atol=1e-5, rtol=1e-5)


def test_refresh_prototypes_defaults_to_kmeans_plusplus_with_restarts() -> None:
    generator = torch.Generator().manual_seed(6)
    bank = RegionalMemoryBank(3, 4, queue_length=30, num_prototypes=4, seed=2)
    assert (bank.kmeans_init, bank.kmeans_restarts, bank.kmeans_iters) == ("k-means++", 10, 10)
    assert "kmeans_init='k-means++', kmeans_restarts=10" in repr(bank)
    bank.enqueue(torch.randn(70, 4, generator=generator), torch.randint(0, 3, (70,), generator=generator))
    prototypes, prototype_valid = bank.refresh_prototypes(seed_offset=1)
    expected, expected_valid = batched_kmeans(
        bank.queue,
        bank.valid_slots(),
        4,
        10,
        torch.Generator().manual_seed(3),
        init="k-means++",
        num_restarts=10,
    )
    assert torch.equal(prototypes, expected) and torch.equal(prototype_valid, expected_valid)


def test_unwritten_slots_never_reach_the_prototypes() -> None:
    generator = torch.Generator().manual_seed(2)
    bank = RegionalMemoryBank(3, 2, queue_length=10, num_prototypes=3)
    bank.enqueue(torch.randn(12, 2, generator=generator), torch.randint(0, 2, (12,), generator=generator))
    clean = bank.refresh_prototypes()[0].clone()
    bank.queue[~bank.valid_slots()] = 1e8  # garbage in every unwritten slot
    assert torch.equal(bank.refresh_prototypes()[0], clean)
    assert torch.equal(bank.prototypes[2], torch.zeros(3, 2))


def test_enqueue_rejects_bad_input() -> None:
    bank = RegionalMemoryBank(3, 2, queue_length=4)
    with pytest.raises(ValueError, match="class_ids must lie"):
        bank.enqueue(torch.zeros(2, 2), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="embeddings must be"):
        bank.enqueue(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(InvalidSetting, match=r"update: expected one of \['ema', 'replace'\], got 'momentum'"):
        RegionalMemoryBank(3, 2, update="momentum")
    with pytest.raises(InvalidSetting, match=r"momentum: expected a value in \[0, 1\), got 1.0"):
        RegionalMemoryBank(3, 2, momentum=1.0)
    with pytest.raises(InvalidSetting, match="kmeans_init: expected one of .*, got 'kmeans'"):
        RegionalMemoryBank(3, 2, kmeans_init="kmeans")
    with pytest.raises(InvalidSetting, match="kmeans_restarts: expected an integer >= 1, got 0"):
        RegionalMemoryBank(3, 2, kmeans_restarts=0)
    with pytest.raises(InvalidSetting, match="queue_length: expected an integer >= 1, got 0"):
        RegionalMemoryBank(3, 2, queue_length=0)
