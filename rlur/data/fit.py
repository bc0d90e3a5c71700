"""Fit the learned simulator on KuaiRand-Pure: feedback, leave and return models; save and report.

Pipeline of :func:`fit_world` (``rlur data fit``):

1. load and validate the logs and feature files (:mod:`rlur.data.kuairand`);
2. build sessions and requests and replay the environment's state over them
   (:mod:`rlur.data.sessions`);
3. split by time: sessions on the last days (≈ ``holdout_share`` of impressions) are held out; of the
   rest, a random 10 % of sessions is the validation set for early stopping;
4. train the three models (:mod:`rlur.data.models`) with AdamW and early stopping on validation loss.
   The return model's targets are right-censored at the end of the log window (a user's last
   session has no observed return; we only know the gap exceeds the days left), so it is trained on
   the censored likelihood: an observed gap contributes ``−log p(class)``, a censored one
   ``−log P(class ≥ first class beyond the window)``. Its base rate is the Kaplan–Meier estimate;
5. evaluate on the held-out days, simulate, and write ``world.pt``, ``world.json`` and
   ``fit_report.md`` (:mod:`rlur.data.report`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rlur.data.features import encode_users, encode_videos, primary_tags, tag_vocabulary
from rlur.data.kuairand import KuaiRandData, load_kuairand
from rlur.data.learned_world import (
    WORLD_FILE,
    WORLD_FORMAT,
    WORLD_VERSION,
    LearnedWorld,
    LearnedWorldConfig,
    group_of_degree,
)
from rlur.data.models import FEEDBACK_OUTPUTS, FeedbackModel, SessionModel, context_features
from rlur.data.report import (
    auc,
    log_loss,
    reliability,
    simulate_statistics,
    tv_distance,
    write_report,
)
from rlur.data.sessions import Sessions, build_sessions, logged_statistics, replay_history, return_classes
from rlur.sim.world import BEHAVIOURS

__all__ = ["FitConfig", "censored_class_shares", "fit_world"]

_R = len(BEHAVIOURS)
_W_LONG, _W_SHORT = FEEDBACK_OUTPUTS.index("watch_frac_long"), FEEDBACK_OUTPUTS.index("watch_frac_short")


@dataclass
class FitConfig:
    """Options of ``rlur data fit`` (defaults suit the full KuaiRand-Pure on 2 CPU cores)."""

    session_gap_hours: float | None = None
    """None: a session is a user-day; else split sessions at inactivity gaps longer than this."""
    max_rows: int | None = None
    """Keep a random subset of users holding at most this many log rows."""
    epochs: int | None = None
    """Maximum epochs per model (early stopping may end sooner); None: enough for ≈ 1,500 steps."""
    seed: int = 0
    include_random: bool = False
    """Also read the random-exposure log."""
    drop_duplicates: bool = False
    holdout_share: float = 0.15
    emb_dim: int = 8
    hidden: int = 64
    hidden2: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-5
    emb_weight_decay: float = 1e-2
    """Decoupled weight decay of the id embeddings (they overfit first on small data)."""
    batch_size: int | None = None
    patience: int = 5
    max_return_day: int = 10
    prediction_noise: float = 0.3
    n_candidates: int = 200
    sim_users: int = 2000
    """Users simulated for the report's simulated-vs-logged comparison."""
    threads: int | None = None
    """torch intra-op threads while fitting (None: leave torch's setting)."""
    progress: bool = True


# ----------------------------------------------------------------------------------------------
def _video_durations_ms(data: KuaiRandData) -> np.ndarray:
    """Each video's duration: median logged ``duration_ms``, else ``video_duration``, else the median."""
    logs, vids = data.logs, data.videos.ids
    ok = np.isfinite(logs.duration_ms) & (logs.duration_ms > 0)
    dur = np.full(len(vids), np.nan)
    if ok.any():
        order = np.argsort(vids)
        vi = order[np.searchsorted(vids[order], logs.video_id[ok])]
        d = logs.duration_ms[ok].astype(np.float64)
        srt = np.lexsort((d, vi))
        vi, d = vi[srt], d[srt]
        starts = np.nonzero(np.r_[True, vi[1:] != vi[:-1]])[0]
        counts = np.diff(np.r_[starts, len(vi)])
        lo, hi = starts + (counts - 1) // 2, starts + counts // 2
        dur[vi[starts]] = (d[lo] + d[hi]) / 2
    feat = data.videos.columns["video_duration"]
    dur = np.where(np.isfinite(dur), dur, np.where(feat > 0, feat, np.nan))
    med = float(np.nanmedian(dur)) if np.isfinite(dur).any() else 60_000.0
    return np.where(np.isfinite(dur), dur, med)


def censored_class_shares(cls: np.ndarray, min_cls: np.ndarray, n_cls: int) -> np.ndarray:
    """Kaplan–Meier class shares: ``cls ≥ 0`` observed, else censored with class ≥ ``min_cls``."""
    obs = cls >= 0
    shares = np.zeros(n_cls)
    surv = 1.0
    for c in range(n_cls - 1):
        at_risk = int((obs & (cls >= c)).sum() + (~obs & (min_cls > c)).sum())
        h = (obs & (cls == c)).sum() / at_risk if at_risk else 0.0
        shares[c] = surv * h
        surv *= 1 - h
    shares[-1] = surv
    return shares


def _auto_batches(n: int, cfg: FitConfig) -> tuple[int, int]:
    bs = cfg.batch_size or int(np.clip(n // 40, 256, 2048))
    steps = max(1, math.ceil(n / bs))
    epochs = cfg.epochs or int(np.clip(math.ceil(1500 / steps), 2, 40))
    return bs, epochs


def _train(model: torch.nn.Module, train_idx: np.ndarray, val_idx: np.ndarray,
           loss_fn: Callable[[torch.Tensor], torch.Tensor], cfg: FitConfig, desc: str) -> dict:
    """Mini-batch AdamW with early stopping on the validation loss; keeps the best state."""
    bs, epochs = _auto_batches(len(train_idx), cfg)
    emb = [p for n, p in model.named_parameters() if ".emb." in n]
    rest = [p for n, p in model.named_parameters() if ".emb." not in n]
    opt = torch.optim.AdamW([{"params": rest, "weight_decay": cfg.weight_decay},
                             {"params": emb, "weight_decay": cfg.emb_weight_decay}], lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    tr, va = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
    best, best_state, bad, history = float("inf"), None, 0, []
    bar = tqdm(total=epochs * math.ceil(len(tr) / bs), desc=f"training {desc}", unit="step",
               disable=not cfg.progress, leave=False)
    for _ in range(epochs):
        model.train()
        perm = tr[torch.randperm(len(tr), generator=g)]
        total = 0.0
        for s in range(0, len(perm), bs):
            loss = loss_fn(perm[s:s + bs])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(perm[s:s + bs])
            bar.update(1)
        model.eval()
        with torch.no_grad():
            chunks = [va[s:s + 8192] for s in range(0, len(va), 8192)]
            val = sum(float(loss_fn(c)) * len(c) for c in chunks) / len(va) if len(va) else total / len(tr)
        history.append({"train_loss": total / len(tr), "val_loss": val})
        bar.set_postfix(val=f"{val:.4f}")
        if val < best - 1e-5:
            best, bad = val, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"batch_size": bs, "max_epochs": epochs, "epochs_run": len(history), "best_val_loss": best,
            "history": history}


def _split(s: Sessions, share: float, seed: int) -> tuple[np.ndarray, str]:
    """Per session: 0 train, 1 validation, 2 held out (the last days holding ≈ ``share`` of impressions)."""
    sess_rows = np.add.reduceat(s.req_len, s.sess_start_req).astype(np.float64)
    per_day = np.bincount(s.sess_day, weights=sess_rows, minlength=s.n_days)
    tail = np.cumsum(per_day[::-1])[::-1] / per_day.sum()  # share of impressions on days ≥ d
    cands = [d for d in range(1, s.n_days) if tail[d] <= share]
    rng = np.random.default_rng(seed)
    part = np.zeros(s.n_sessions, np.int8)
    if cands and s.n_days >= 3:
        d = cands[0]
        part[s.sess_day >= d] = 2
        desc = f"sessions on days {d}..{s.n_days - 1} (of 0..{s.n_days - 1}), {tail[d]:.1%} of impressions"
    else:
        part[rng.random(s.n_sessions) < share] = 2
        desc = f"a random {share:.0%} of sessions (too few days for a split by time)"
    train = np.nonzero(part == 0)[0]
    part[train[rng.random(len(train)) < 0.1]] = 1
    return part, desc


def _predict(fn: Callable[[torch.Tensor], torch.Tensor], idx: np.ndarray, width: int, chunk: int = 16384
             ) -> np.ndarray:
    with torch.no_grad():
        out = [fn(torch.as_tensor(idx[s:s + chunk])) for s in range(0, len(idx), chunk)]
    return torch.cat(out).numpy() if out else np.zeros((0, width), np.float32)


def _intercept_shift(z: torch.Tensor, target: float, iters: int = 30) -> float:
    """δ such that ``mean(sigmoid(z + δ)) = target`` (Newton's method; calibration in the large)."""
    if len(z) == 0 or not 0 < target < 1:
        return 0.0
    d = 0.0
    for _ in range(iters):
        p = torch.sigmoid(z.double() + d)
        g = float(p.mean()) - target
        h = float((p * (1 - p)).mean())
        if abs(g) < 1e-7 or h < 1e-12:
            break
        d = float(np.clip(d - g / h, -10, 10))
    return d


def _binary_metrics(y: np.ndarray, p: np.ndarray, base: float) -> dict:
    return {"positives": int(y.sum()), "count": len(y), "base_rate": float(base), "auc": auc(y, p),
            "log_loss": log_loss(y, p), "base_log_loss": log_loss(y, base)}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ----------------------------------------------------------------------------------------------
class _Fit:
    """The data of one fit as tensors, the three models and their training and evaluation."""

    def __init__(self, data: KuaiRandData, cfg: FitConfig, say: Callable[[str], None]) -> None:
        self.cfg, self.say = cfg, say
        users, videos, logs = data.users, data.videos, data.logs
        mode = "day" if cfg.session_gap_hours is None else "gap"
        self.dur_ms = _video_durations_ms(data)
        self.tags = tag_vocabulary(videos)
        self.topic = primary_tags(videos, self.tags)
        self.n_topics = len(self.tags) + 1
        s = self.s = build_sessions(logs, users.ids, videos.ids, self.dur_ms, mode=mode,
                                    gap_hours=cfg.session_gap_hours)
        self.uenc = encode_users(users)
        self.venc = encode_videos(videos, self.dur_ms / 1000.0, s.day0, self.tags)
        observed = s.sess_return_day >= 0
        depth = s.sess_n_req.astype(np.float64)
        quality = np.add.reduceat(s.req_resp[:, 2].astype(np.float64), s.sess_start_req) / depth
        self.inits = (float(s.sess_return_time[observed].mean()) if observed.any() else 2.0, float(depth.mean()),
                      float(quality.mean()))
        h = self.hist = replay_history(s, self.topic[s.row_video], self.n_topics, len(users), self.inits)
        say(f"built {s.n_sessions:,} sessions of {s.n_requests:,} requests over {s.n_days} days ({mode} sessions)")

        T = self.T = lambda x, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(x), dtype=dt)
        rs = s.req_session
        sess_vars = [T(v[rs]) for v in (s.sess_opens_today.astype(np.float32), h.sess_n_sessions, h.sess_last_return,
                                         h.sess_ema_return, h.sess_ema_depth, h.sess_ema_quality)]
        self.ctx_before = context_features(T(s.req_pos), T(h.req_sum_before), T(h.req_last_before),
                                           T(h.req_last_rep_before), *sess_vars)
        self.ctx_after = context_features(T(s.req_pos + 1), T(h.req_sum_after), T(s.req_resp), T(h.req_rep),
                                          *sess_vars)
        self.user_static, self.video_static = self.uenc.dense(), self.venc.dense()
        self.row_user, self.row_video = T(s.row_user, torch.long), T(s.row_video, torch.long)
        self.row_req, self.row_rep = T(s.row_request, torch.long), T(h.row_rep)
        self.flags, self.frac = T(s.row_flags), T(s.row_frac)
        self.req_user = T(s.sess_user[rs], torch.long)
        self.leave_y = T(h.req_leave)
        self.sess_user = T(s.sess_user, torch.long)
        self.last_req = T(s.sess_start_req + s.sess_n_req - 1, torch.long)
        # Return targets: observed class, or −1 with the first class the window cannot rule out.
        k = cfg.max_return_day
        self.n_cls = k + 2
        self.ret_cls = np.where(observed, return_classes(s.sess_return_day, k), -1)
        remaining = s.n_days - 1 - s.sess_day
        self.ret_min = np.where(observed, self.ret_cls, np.minimum(remaining + 1, k + 1))
        cidx = np.arange(self.n_cls)
        allowed = np.where(observed[:, None], cidx == self.ret_cls[:, None], cidx >= self.ret_min[:, None])
        self.ret_logmask = T(np.where(allowed, 0.0, -np.inf))

        self.part, self.holdout = _split(s, cfg.holdout_share, cfg.seed)
        row_part, req_part = self.part[rs[s.row_request]], self.part[rs]
        self.rows = [np.nonzero(row_part == i)[0] for i in range(3)]
        self.reqs = [np.nonzero(req_part == i)[0] for i in range(3)]
        self.sess = [np.nonzero(self.part == i)[0] for i in range(3)]
        if min(len(self.rows[0]), len(self.reqs[0])) == 0:
            raise ValueError("too little data to train on: every session fell into the held-out part")
        self.kw = {"emb": cfg.emb_dim, "hidden": cfg.hidden, "hidden2": cfg.hidden2}
        self.n_u, self.n_v = len(users), len(videos)
        self.info: dict = {}

    # --- feedback -------------------------------------------------------------------------------
    def fb_logits(self, r: torch.Tensor) -> torch.Tensor:
        u, v = self.row_user[r], self.row_video[r]
        return self.fb(self.user_static[u], u, self.video_static[v], v, self.ctx_before[self.row_req[r]],
                       self.row_rep[r])

    def fb_loss(self, r: torch.Tensor) -> torch.Tensor:
        z = self.fb_logits(r)
        y = self.flags[r]
        loss = F.binary_cross_entropy_with_logits(z[:, :_R], y) * _R
        f, lv = self.frac[r], y[:, 1] > 0
        ok = torch.isfinite(f)
        for col, mask in ((_W_LONG, ok & lv), (_W_SHORT, ok & ~lv)):
            if bool(mask.any()):
                loss = loss + F.binary_cross_entropy_with_logits(z[mask, col], f[mask]) * mask.float().mean()
        return loss

    def train_feedback(self) -> None:
        tr = self.rows[0]
        self.base_rates = self.flags[tr].mean(0).clamp(1e-5, 1 - 1e-5)
        fr, lv = self.frac[tr], self.flags[tr, 1] > 0
        fin = torch.isfinite(fr)
        m_long = float(fr[lv & fin].mean()) if bool((lv & fin).any()) else 0.8
        m_short = float(fr[~lv & fin].mean()) if bool((~lv & fin).any()) else 0.2
        self.fb = FeedbackModel(self.user_static.shape[1], self.video_static.shape[1], self.n_u, self.n_v, **self.kw)
        with torch.no_grad():
            ratio = torch.tensor([m_long, m_short]).clamp(0.01, 0.99)
            self.fb.head.weight.zero_()  # start exactly at the base rates
            self.fb.head.bias.copy_(torch.logit(torch.cat((self.base_rates, ratio))))
        self.say(f"training the feedback model on {len(tr):,} impressions")
        self.info["feedback"] = _train(self.fb, tr, self.rows[1], self.fb_loss, self.cfg, "feedback")
        # Early stopping can leave the mean prediction off the observed rate: shift each intercept.
        z = torch.as_tensor(_predict(self.fb_logits, tr, len(FEEDBACK_OUTPUTS)))
        shifts = [_intercept_shift(z[:, i], float(self.flags[tr, i].mean())) for i in range(_R)]
        for col, mask in ((_W_LONG, lv & fin), (_W_SHORT, ~lv & fin)):
            shifts.append(_intercept_shift(z[mask, col], float(fr[mask].mean())) if bool(mask.any()) else 0.0)
        with torch.no_grad():
            self.fb.head.bias += torch.tensor(shifts, dtype=torch.float32)
        self.info["feedback"]["intercept_shift"] = shifts

    # --- leave ----------------------------------------------------------------------------------
    def lv_logits(self, q: torch.Tensor) -> torch.Tensor:
        u = self.req_user[q]
        return self.lm(self.user_static[u], u, self.ctx_after[q]).squeeze(-1)

    def train_leave(self) -> None:
        tr = self.reqs[0]
        self.leave_base = float(self.leave_y[tr].mean().clamp(1e-4, 1 - 1e-4))
        self.lm = SessionModel(self.user_static.shape[1], self.n_u, 1, **self.kw)
        with torch.no_grad():
            self.lm.head.weight.zero_()
            self.lm.head.bias.fill_(math.log(self.leave_base / (1 - self.leave_base)))
        self.say(f"training the leave model on {len(tr):,} requests")
        loss = lambda q: F.binary_cross_entropy_with_logits(self.lv_logits(q), self.leave_y[q])  # noqa: E731
        self.info["leave"] = _train(self.lm, tr, self.reqs[1], loss, self.cfg, "leave")
        shift = _intercept_shift(torch.as_tensor(_predict(self.lv_logits, tr, 0)), float(self.leave_y[tr].mean()))
        with torch.no_grad():
            self.lm.head.bias += shift
        self.info["leave"]["intercept_shift"] = shift

    # --- return ---------------------------------------------------------------------------------
    def rt_logits(self, i: torch.Tensor) -> torch.Tensor:
        u = self.sess_user[i]
        return self.rm(self.user_static[u], u, self.ctx_after[self.last_req[i]])

    def rt_loss(self, i: torch.Tensor) -> torch.Tensor:
        z = self.rt_logits(i)
        return (torch.logsumexp(z, -1) - torch.logsumexp(z + self.ret_logmask[i], -1)).mean()

    def train_return(self) -> None:
        tr = self.sess[0]
        self.cls_share = censored_class_shares(self.ret_cls[tr], self.ret_min[tr], self.n_cls)
        self.rm = SessionModel(self.user_static.shape[1], self.n_u, self.n_cls, **self.kw)
        with torch.no_grad():
            self.rm.head.weight.zero_()
            self.rm.head.bias.copy_(torch.log(torch.as_tensor(self.cls_share + 1e-4, dtype=torch.float32)))
        self.say(f"training the return model on {len(tr):,} sessions "
                 f"({int((self.ret_cls[tr] >= 0).sum()):,} with an observed return)")
        self.info["return"] = _train(self.rm, tr, self.sess[1], self.rt_loss, self.cfg, "return")
        # Match the mean predicted class distribution to the Kaplan–Meier shares (a few IPF steps).
        z = torch.as_tensor(_predict(self.rt_logits, tr, self.n_cls))
        target = torch.as_tensor(self.cls_share, dtype=torch.float32).clamp(min=1e-6)
        shift = torch.zeros(self.n_cls)
        for _ in range(20):
            shift += torch.log(target / torch.softmax(z + shift, -1).mean(0).clamp(min=1e-9))
            shift -= shift.mean()
        with torch.no_grad():
            self.rm.head.bias += shift
        self.info["return"]["intercept_shift"] = shift.tolist()

    # --- held-out evaluation --------------------------------------------------------------------
    def evaluate(self) -> dict:
        s, h = self.s, self.hist
        metrics: dict = {"feedback": {}, "calibration": {}, "training": self.info}
        rows, reqs, sess = self.rows[2], self.reqs[2], self.sess[2]
        z = _predict(self.fb_logits, rows, len(FEEDBACK_OUTPUTS))
        y = s.row_flags[rows]
        p = _sigmoid(z[:, :_R])
        for i, b in enumerate(BEHAVIOURS):
            metrics["feedback"][b] = _binary_metrics(y[:, i], p[:, i], float(self.base_rates[i]))
            if y[:, i].sum() >= 20:
                metrics["calibration"][b] = reliability(y[:, i], p[:, i])
        f = s.row_frac[rows]
        ok = np.isfinite(f)
        pred = np.where(y[:, 1] > 0, _sigmoid(z[:, _W_LONG]), _sigmoid(z[:, _W_SHORT]))
        base = float(np.nanmean(s.row_frac[self.rows[0]])) if np.isfinite(s.row_frac[self.rows[0]]).any() else 0.0
        metrics["watch"] = {"mae": float(np.abs(pred[ok] - f[ok]).mean()) if ok.any() else float("nan"),
                            "base_mae": float(np.abs(base - f[ok]).mean()) if ok.any() else float("nan")}
        pl = _sigmoid(_predict(self.lv_logits, reqs, 0))
        metrics["leave"] = _binary_metrics(h.req_leave[reqs], pl, self.leave_base)
        if h.req_leave[reqs].sum() >= 20:
            metrics["calibration"]["leave"] = reliability(h.req_leave[reqs], pl)
        zr = torch.as_tensor(_predict(self.rt_logits, sess, self.n_cls))
        pr = torch.softmax(zr, -1).numpy()
        cls, mn = self.ret_cls[sess], self.ret_min[sess]
        mask = self.ret_logmask[torch.as_tensor(sess)].numpy() == 0
        share = self.cls_share
        # Day-1 status is known for observed gaps and for censored sessions that rule out day 1.
        known = (cls >= 0) | (mn >= 2)
        d1 = (cls[known] == 1).astype(np.float64)
        days = np.arange(self.n_cls, dtype=np.float64)
        obs = cls >= 0
        metrics["return"] = {
            "classes": self.n_cls, "sessions": len(sess), "observed": int(obs.sum()),
            "log_loss": float(-np.log(np.clip((pr * mask).sum(1), 1e-7, 1)).mean()) if len(sess) else float("nan"),
            "base_log_loss": float(-np.log(np.clip((share * mask).sum(1), 1e-7, 1)).mean()) if len(sess)
            else float("nan"),
            "day1_positives": int(d1.sum()), "day1_count": len(d1), "day1_base_rate": float(share[1]),
            "day1_auc": auc(d1, pr[known, 1]), "day1_log_loss": log_loss(d1, pr[known, 1]),
            "day1_base_log_loss": log_loss(d1, float(share[1])),
            "mean_pred_day": float((pr * days).sum(1).mean()) if len(sess) else float("nan"),
            "mean_base_day": float((share * days).sum()),
        }
        if d1.sum() >= 20:
            metrics["calibration"]["return day 1"] = reliability(d1, pr[known, 1])
        return metrics

    # --- the world ------------------------------------------------------------------------------
    def payload(self, data: KuaiRandData) -> dict:
        s, cfg, T, k = self.s, self.cfg, self.T, self.cfg.max_return_day
        users, videos = data.users, data.videos
        gaps = s.sess_return_day[s.sess_return_day >= 0]
        tail = gaps[gaps > k]
        wcfg = LearnedWorldConfig(
            world_seed=cfg.seed, max_return_day=k, prediction_noise=cfg.prediction_noise,
            n_candidates=cfg.n_candidates, max_session_depth=int(max(1, min(200, s.sess_n_req.max()))),
            session_mode=s.mode, session_gap_hours=s.gap_hours, n_topics=self.n_topics,
            max_opens_per_day=int(min(48, s.sess_opens_today.max() + 1)),
            return_horizon_days=int(max(k + 1, min(60, tail.max() if len(tail) else k + 1))),
        )
        horizon = wcfg.return_horizon_days
        tail_days = np.arange(k + 1, horizon + 1)
        tail_counts = np.bincount(np.minimum(tail, horizon), minlength=horizon + 1)[k + 1:].astype(np.float64)
        tail_prob = tail_counts + 0.05 * np.exp(-(tail_days - k - 1) / 5.0)  # smoothed, decaying prior
        same = s.sess_return_time[s.sess_return_day == 0]
        same_q = np.quantile(same, np.linspace(0, 1, 21)) if len(same) else np.linspace(0.04, 0.4, 21)
        exposure = np.bincount(s.row_video, minlength=self.n_v)  # the catalogue as the logs show it
        simulate = np.zeros(self.n_u, bool)
        simulate[s.sess_user[self.part < 2]] = True
        du = self.user_static.shape[1]
        models = {
            "feedback": {"arch": {"kind": "feedback", "d_user": du, "d_video": self.video_static.shape[1],
                                  "n_users": self.n_u, "n_videos": self.n_v, **self.kw}, "state": self.fb.state_dict()},
            "leave": {"arch": {"kind": "session", "d_user": du, "n_users": self.n_u, "n_out": 1, **self.kw},
                      "state": self.lm.state_dict()},
            "return": {"arch": {"kind": "session", "d_user": du, "n_users": self.n_u, "n_out": self.n_cls, **self.kw},
                       "state": self.rm.state_dict()},
        }
        return {
            "format": WORLD_FORMAT, "version": WORLD_VERSION, "config": wcfg.to_dict(),
            "user_encoding": self.uenc.encoding.to_dict(), "video_encoding": self.venc.encoding.to_dict(),
            "tags": list(self.tags),
            "users": {"ids": T(users.ids, torch.long), "codes": T(self.uenc.codes, torch.int16),
                      "numeric": T(self.uenc.numeric), "simulate": T(simulate, torch.bool),
                      "group": T([group_of_degree(d) for d in users.columns["user_active_degree"]], torch.long),
                      "concentration": T(self.hist.user_concentration)},
            "videos": {"ids": T(videos.ids, torch.long), "codes": T(self.venc.codes, torch.int16),
                       "numeric": T(self.venc.numeric), "duration_s": T(self.dur_ms / 1000.0),
                       "topic": T(self.topic, torch.long), "exposure": T(exposure, torch.long)},
            "models": models,
            "return_tail": {"days": T(tail_days, torch.long), "prob": T(tail_prob / tail_prob.sum(), torch.float64)},
            "same_day_quantiles": T(same_q), "inits": list(self.inits),
            "logged": logged_statistics(s, k),
        }


def fit_world(kuairand: str | Path, out: str | Path, cfg: FitConfig | None = None) -> dict:
    """Fit a learned world from the KuaiRand-Pure folder ``kuairand`` into the folder ``out``.

    Writes ``world.pt`` (models, tables, metadata; load with :func:`rlur.data.learned_world.load_world`),
    ``world.json`` (metadata) and ``fit_report.md`` with PNG plots. Returns the summary dict.
    """
    cfg = cfg or FitConfig()
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _fit_world(kuairand, out, cfg)
    finally:
        torch.set_num_threads(threads)


def _fit_world(kuairand: str | Path, out: str | Path, cfg: FitConfig) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = print if cfg.progress else (lambda *a, **k: None)
    data = load_kuairand(kuairand, include_random=cfg.include_random, drop_duplicates=cfg.drop_duplicates,
                         max_rows=cfg.max_rows, seed=cfg.seed, progress=cfg.progress)
    say(f"loaded {len(data.logs):,} impressions, {len(data.users):,} users, {len(data.videos):,} videos")
    fit = _Fit(data, cfg, say)
    fit.train_feedback()
    fit.train_leave()
    fit.train_return()
    train_seconds = time.perf_counter() - t0
    metrics = fit.evaluate()
    payload = fit.payload(data)
    world = LearnedWorld(payload, source=str(out / WORLD_FILE))
    logged, s = payload["logged"], fit.s
    n_sim = int(min(cfg.sim_users, max(len(world.sim_users), 64)))
    say(f"simulating {n_sim} users for {s.n_days} days to compare with the logs")
    simulated = {r: simulate_statistics(world, n_sim, s.n_days, seed=cfg.seed, ranking=r) for r in ("logged", "fusion")}
    for v in simulated.values():
        v["return_day_tv"] = tv_distance(logged["return_day_hist"], v["return_day_hist"])
    gap_rule = f"inactivity gaps > {cfg.session_gap_hours} h" if s.mode == "gap" else "a session is a user-day"
    d = data.data_dir
    meta = {
        "source": d.name if d.name != "data" else f"{d.parent.name}/data", "log_files": data.log_files,
        "videos": fit.n_v, "session_rule": f"{gap_rule}; requests are ≤ 6 impressions",
        "holdout": fit.holdout, "train_seconds": train_seconds, "notes": data.notes, "fit_config": asdict(cfg),
        "train_impressions": len(fit.rows[0]), "heldout_impressions": len(fit.rows[2]),
        "n_user_features": fit.user_static.shape[1], "n_video_features": fit.video_static.shape[1],
        "tags": len(fit.tags),
    }
    summary = {"meta": meta, "metrics": metrics, "logged": logged, "simulated": simulated, "config": payload["config"]}
    payload.update(metrics=metrics, meta=meta, simulated=simulated)
    torch.save(payload, out / WORLD_FILE)
    (out / "world.json").write_text(json.dumps(_jsonable({
        "format": WORLD_FORMAT, "version": WORLD_VERSION, **summary,
        "files": {"world": WORLD_FILE, "report": "fit_report.md"},
    }), indent=2) + "\n")
    write_report(out, summary)
    summary["seconds"] = time.perf_counter() - t0
    return summary


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return _jsonable(float(x))
    return x
