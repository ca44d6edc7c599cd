"""The How learning works page's pieces: its session entries, the data set it looks at, the class-average baseline
(cached) beside a trained model, and gradient descent by hand (buttons that move the toy one phase at a time)."""
from __future__ import annotations

import json
import math

import numpy as np
import streamlit as st
import torch
from PIL import Image

from engine.data.builtin import ensure_builtin
from engine.data.data_prep import folder_stamp
from engine.data.images import PresizedImages, to_pil
from engine.data.loaders import LabelledItems, label_items
from engine.errors import UserError
from engine.results.learning import (Baseline, Descent, SpeedData, advance, baseline, initialise, run_steps,
                                     same_validation)
from engine.data.resolve import data_root, resolve
from engine.spec import RunSpec
from engine.store.runs import ACTIVE
from ui.data_status import data_problem, run_spec
from ui.draft import window_id
from ui.present import presenting
from ui.shared import data_prep, run_store
from ui.state import SessionKey
from ui.text import md

PRESENT_AVERAGE_PX = 136  # a class average's width while presenting

LEARN_CLASS = SessionKey[str]("learning.class")  # the class of the picture shown as numbers
LEARN_INDEX = SessionKey[int]("learning.index", 1)  # which picture of that class (from 1)
LEARN_GRID = SessionKey[int]("learning.grid", 28)  # the side of the grid of numbers
LEARN_LR = SessionKey[float]("learning.lr", 1e-5)  # the toy's learning rate (the book's)
LEARN_DESCENT = SessionKey[Descent]("learning.descent")  # the toy's state; None until Initialise

GRID_SIZES = [8, 14, 20, 28]
LEARNING_RATES = [1e-8, 1e-7, 1e-6, 1e-5, 2e-5, 3e-5, 3.5e-5, 4e-5, 5e-5, 1e-4, 1e-3]
STEPS_AT_ONCE = 10
BUTTONS = [("initialise", "Initialise"), ("predict", "Predict"), ("loss", "Loss"), ("gradient", "Gradient"),
           ("step", "Step")]


# ---------------------------------------------------------------- the data set

def learning_data() -> tuple[RunSpec, LabelledItems, PresizedImages, str | None]:
    """The draft's data set when it can be used, else the built-in digits, with the reason it is not the draft's."""
    spec, why = run_spec(), None
    if spec is None:
        why = data_problem() or "No data set is chosen yet."
        spec = resolve(RunSpec(), guess_rules=False)  # the built-in digits
    if spec.data.kind == "builtin":
        ensure_builtin(spec.data.key)
    read = data_prep().read(data_root(spec.data), spec.data.presize, spec.data.presize_method, owner=window_id())
    with st.spinner("Reading the pictures…"):
        read.wait(None)
    if read.failed or read.images is None:
        raise UserError(read.failed or f"Reading {data_root(spec.data)} was stopped; open the Data page to read it again.")
    return spec, label_items(read.scan, spec.data.label, spec.data.split), read.images, why


@st.cache_data(max_entries=8, show_spinner="Averaging the pictures of each class…")
def _baseline(key: tuple[str, str], _items: LabelledItems, _images: PresizedImages) -> Baseline:
    return baseline(_items, _images)


def data_baseline(spec: RunSpec, items: LabelledItems, images: PresizedImages) -> Baseline:
    """The closest-average baseline of the data set, computed once per data settings and cleaner change."""
    return _baseline((json.dumps(spec.to_dict()["data"]), folder_stamp(data_root(spec.data))), items, images)


def trained_accuracy(spec: RunSpec) -> tuple[int, float] | None:
    """(run id, accuracy) of the newest finished run on the same pictures, labels and validation split, if any."""
    runs = run_store().runs()
    if runs.empty:
        return None
    done = runs[runs["accuracy"].notna() & ~runs["status"].isin(ACTIVE)].head(50)
    for run_id, accuracy in zip(done["id"], done["accuracy"]):
        run = run_store().run(int(run_id))
        if run is not None and same_validation(run["spec"].data, spec.data):
            return int(run_id), float(accuracy)
    return None


def averages_grid(averages: np.ndarray, titles: list[str], key: str, cols: int = 10, px: int = 112) -> None:
    """Class averages ([C, 3, s, s] in [0, 1]) as small pictures with visible pixels, `cols` to a row, titled. While
    presenting they lie in a row that wraps, each PRESENT_AVERAGE_PX wide, so a title keeps its words whole in the
    larger type (in a tenth of the page, "mimetypes (558)" broke mid-word)."""
    def picture(avg: np.ndarray) -> Image.Image:
        small = to_pil(torch.from_numpy(avg))
        scale = max(1, -(-px // small.width))
        return small.resize((small.width * scale, small.height * scale), Image.Resampling.NEAREST)

    if presenting():
        with st.container(key=key, horizontal=True, gap="small"):
            for avg, title in zip(averages, titles):
                st.image(picture(avg), caption=md(title), width=PRESENT_AVERAGE_PX)
        return
    with st.container(key=key):
        for start in range(0, len(titles), cols):
            for col, avg, title in zip(st.columns(cols), averages[start:start + cols], titles[start:start + cols]):
                col.image(picture(avg), caption=md(title), width="stretch")


# ---------------------------------------------------------------- gradient descent by hand

def _do(phase: str, data: SpeedData) -> None:
    """A phase button's click: initialise starts again, any other phase moves the toy one phase on."""
    state = LEARN_DESCENT.get()
    LEARN_DESCENT.set(initialise() if phase == "initialise" or state is None else advance(state, data, LEARN_LR.get()))


def _run_steps(data: SpeedData) -> None:
    state = LEARN_DESCENT.get() or initialise()
    LEARN_DESCENT.set(run_steps(state, data, LEARN_LR.get(), STEPS_AT_ONCE))


def descent_buttons(data: SpeedData) -> Descent | None:
    """Initialise, Predict, Loss, Gradient, Step (each only when it comes next) and Run 10 steps; the state after."""
    state = LEARN_DESCENT.get()
    nxt = None if state is None or state.stuck else state.next_phase
    cols = st.columns(len(BUTTONS) + 1)
    for col, (phase, label) in zip(cols, BUTTONS):
        col.button(label, key=f"learning.{phase}", on_click=_do, args=(phase, data), width="stretch",
                   type="primary" if phase == (nxt or "initialise") else "secondary",
                   disabled=phase != "initialise" and phase != nxt)
    cols[-1].button(f"Run {STEPS_AT_ONCE} steps", key="learning.run", on_click=_run_steps, args=(data,),
                    width="stretch", disabled=state is not None and state.stuck,
                    help="Predict, loss, gradient and step, ten times over (the step under way is finished first).")
    return LEARN_DESCENT.get()


def _num(x: float) -> str:
    """A number as people read it: 30,282.7 · -1.324 · 4.559e+11."""
    return f"{x:.3e}" if abs(x) >= 1e6 else f"{x:,.1f}" if abs(x) >= 100 else f"{x:.4g}"


def phase_lines(state: Descent, data: SpeedData) -> list[str]:
    """Markdown: what each phase of the step under way worked out (our numbers, never user text)."""
    a, b, c = state.params
    lines = []
    if state.done == "step":
        lines.append(f"**Step {state.steps}** · each parameter moves against its gradient, by learning rate × "
                     f"gradient: " + "; ".join(f"{n} = {_num(p)} − {state.lr:g} × ({_num(g)}) = **{_num(new)}**"
                                               for n, p, g, new in zip("abc", state.before, state.grad, state.params)))
        lines.append("Next: **Predict** with the new parameters.")
        return lines
    start = "a random first guess" if state.steps == 0 else f"after {state.steps} step{'s' if state.steps != 1 else ''}"
    lines.append(f"**Parameters** ({start}): a = {_num(a)}, b = {_num(b)}, c = {_num(c)}")
    if state.preds is not None:
        shown = ", ".join(f"t={int(t)} → {_num(p)}" for t, p in zip(data.time[:4], state.preds[:4]))
        lines.append(f"**Predict** · the curve's speed at each second: {shown}, … ({len(state.preds)} predictions, "
                     "the red crosses)")
    if state.loss is not None:
        lines.append(f"**Loss** · the mean of (predicted − measured)² over the {len(data.time)} points = "
                     f"**{_num(state.loss)}**")
    if state.grad is not None:
        lines.append("**Gradient** · how much the loss grows when each parameter grows a little: "
                     + ", ".join(f"∂loss/∂{n} = {_num(g)}" for n, g in zip("abc", state.grad)))
    if not state.stuck:
        lines.append(f"Next: **{state.next_phase.capitalize()}**.")
    return lines


def verdict(state: Descent) -> tuple[str, str] | None:
    """("warning" or "info", what the loss history says about the learning rate), once there is enough of it."""
    losses = state.losses
    if state.stuck:
        return ("warning", "The numbers grew too large to compute: the learning rate is far too large. Every step "
                           "overshoots further than the last. Choose a smaller rate and click Initialise.")
    if len(losses) >= 3 and losses[-1] > losses[0]:
        return ("warning", "The loss is growing: the learning rate is too large. Each step jumps over the best "
                           "parameters and lands further away on the other side, so the curve swings wildly.")
    if len(losses) >= 5 and (losses[0] - losses[-1]) / losses[0] < 0.25:
        return ("info", "The loss barely moves: the learning rate is so small that each step changes the curve "
                        "by almost nothing. Try a larger rate.")
    if len(losses) >= 3 and math.isfinite(losses[-1]) and losses[-1] < 0.1 * losses[0]:
        return ("info", "The loss has fallen a long way: a good learning rate.")
    return None
