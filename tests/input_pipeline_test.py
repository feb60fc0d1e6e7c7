"""grain pipeline: resumable order, process slicing, padded evaluation batches."""

import numpy as np

from synthjax.data import input_pipeline


def _source(n):
    return [
        {"image": np.full((2, 2, 1), i, np.uint8), "labels": np.array([i], np.float32)}
        for i in range(n)
    ]


def _ids(batch):
    return batch["labels"][:, 0].astype(int).tolist()


def test_restored_iterator_continues_exactly():
    src = _source(13)
    it = input_pipeline.train_iterator(
        input_pipeline.train_dataset(src, np.arange(13), global_batch=4, seed=5)
    )
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [_ids(next(it)) for _ in range(5)]
    resumed = input_pipeline.train_iterator(
        input_pipeline.train_dataset(src, np.arange(13), global_batch=4, seed=5)
    )
    resumed.set_state(state)
    assert [_ids(next(resumed)) for _ in range(5)] == expected


def test_epochs_cover_the_kept_indices_and_reshuffle():
    kept = np.array([1, 3, 4, 8, 9, 11])
    ds = input_pipeline.train_dataset(_source(12), kept, global_batch=6, seed=0)
    first, second = _ids(ds[0]), _ids(ds[1])
    assert sorted(first) == kept.tolist() == sorted(second)
    assert first != second


def test_process_slices_make_the_single_process_batch():
    src = _source(20)
    whole = input_pipeline.train_dataset(src, np.arange(20), global_batch=8, seed=1)
    parts = [
        input_pipeline.train_dataset(
            src, np.arange(20), global_batch=8, seed=1, process_index=p, process_count=2
        )
        for p in range(2)
    ]
    for step in range(6):
        assert _ids(whole[step]) == _ids(parts[0][step]) + _ids(parts[1][step])


def test_eval_batches_pad_and_mask():
    batches = list(input_pipeline.eval_batches(_source(10), [2, 4, 6, 8, 9], batch_size=2))
    assert [b["image"].shape[0] for b in batches] == [2, 2, 2]
    assert batches[-1]["mask"].tolist() == [True, False]
    seen = np.concatenate([b["labels"][b["mask"], 0] for b in batches])
    assert seen.tolist() == [2, 4, 6, 8, 9]


def test_hflip_is_seeded():
    src = [
        {"image": np.arange(4, dtype=np.uint8).reshape(1, 4, 1), "labels": np.zeros(1, np.float32)}
    ] * 8
    a = input_pipeline.train_dataset(src, np.arange(8), global_batch=8, seed=2, hflip=True)[0]
    b = input_pipeline.train_dataset(src, np.arange(8), global_batch=8, seed=2, hflip=True)[0]
    np.testing.assert_array_equal(a["image"], b["image"])
    flipped = (a["image"][:, 0, 0, 0] == 3).sum()
    assert 0 < flipped < 8


def test_batch_plan_changes_size_and_continues_the_record_stream():
    src = _source(30)
    plan = [(0, 8), (3, 4), (5, 6)]
    ds = input_pipeline.train_dataset(src, np.arange(30), global_batch=plan, seed=3)
    sizes = [len(_ids(ds[j])) for j in range(8)]
    assert sizes == [8, 8, 8, 4, 4, 6, 6, 6]
    # Batches are consecutive pieces of the same shuffled stream as a constant batch of 2.
    pairs = input_pipeline.train_dataset(src, np.arange(30), global_batch=2, seed=3)
    stream = [i for j in range(25) for i in _ids(pairs[j])]
    assert [i for j in range(8) for i in _ids(ds[j])] == stream[: sum(sizes)]
    halves = [
        input_pipeline.train_dataset(
            src, np.arange(30), global_batch=plan, seed=3, process_index=p, process_count=2
        )
        for p in range(2)
    ]
    for j in range(8):
        assert _ids(ds[j]) == _ids(halves[0][j]) + _ids(halves[1][j])
    resumed = input_pipeline.train_iterator(ds)
    for _ in range(4):
        next(resumed)
    state = resumed.get_state()
    again = input_pipeline.train_iterator(
        input_pipeline.train_dataset(src, np.arange(30), global_batch=plan, seed=3)
    )
    again.set_state(state)
    assert _ids(next(again)) == _ids(ds[4])
