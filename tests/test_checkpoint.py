"""The checkpoint and resume core every training engine uses (medrepro.checkpoint)."""
from __future__ import annotations

import torch

from medrepro import checkpoint as ckpt


def _objects(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def test_resume_restores_what_was_saved_and_refuses_other_runs(tmp_path, capsys):
    path = tmp_path / "ck.pt"
    assert ckpt.resume(path, "fp", "classifier") == ckpt.Resumed()  # no file: a fresh start, silently
    model, opt, sched = _objects(0)
    ckpt.save(path, "fp", "classifier", 2, [{"epoch": 3}], model, optimizer=opt, scheduler=sched, best_val=0.5)
    other, other_opt, other_sched = _objects(1)
    state = ckpt.resume(path, "fp", "classifier", model=other, optimizer=other_opt, scheduler=other_sched)
    assert (state.epoch, state.history, state.extra) == (3, [{"epoch": 3}], {"best_val": 0.5})
    assert torch.equal(other.weight, model.weight) and other_sched.last_epoch == sched.last_epoch
    assert other_opt.state_dict()["state"][0]["momentum_buffer"].equal(opt.state_dict()["state"][0]["momentum_buffer"])
    assert f"resumed from {path} after epoch 3" in capsys.readouterr().err
    for fingerprint, engine in (("other", "classifier"), ("fp", "torchvision")):
        fresh, _, _ = _objects(2)
        assert ckpt.resume(path, fingerprint, engine, model=fresh) == ckpt.Resumed()
        assert not torch.equal(fresh.weight, model.weight)  # nothing loaded
        assert capsys.readouterr().err.count(f"ignoring {path}") == 1
    torch.save({"fingerprint": "fp", "epoch": 4, "history": [], "model": model.state_dict()}, path)  # schema 1
    assert ckpt.resume(path, "fp", "classifier") == ckpt.Resumed()
    ckpt.finish(path)
    assert not path.exists()
    ckpt.finish(None)
    ckpt.finish(path)  # nothing to remove: no error


def test_epoch_batches_draw_without_replacement_and_reshuffle_each_pass():
    gen = torch.Generator().manual_seed(0)
    batches = ckpt.epoch_batches(5, 4, 3, gen)  # 12 indices: two passes and a part of a third
    flat = [i for b in batches for i in b]
    assert [len(b) for b in batches] == [3] * 4
    assert sorted(flat[:5]) == sorted(flat[5:10]) == list(range(5)) and len(set(flat[10:])) == 2
    again = ckpt.epoch_batches(5, 4, 3, torch.Generator().manual_seed(0))
    assert again == batches  # seeded: the same batches on a resumed run
