"""Explain as I go: every plain-language note the pages show in the guided demo mode, the glossary they link
to, and the ten-minute demo script. All of Loupe's explanatory text lives here, nowhere else.

A note is Markdown written by us (never user text); a term in [[double brackets]] becomes a link to its
glossary entry, which opens in a new tab with the same window's settings. `{thing}` in a note is what the data set
holds: "digit" on the built-in digits, "picture" on any other, so a note never speaks of digits on the user's photos.
"""
from __future__ import annotations

import re

import streamlit as st

from ui.draft import draft, window_id
from ui.state import EXPLAIN

GLOSSARY: dict[str, str] = {
    "image classifier": "A program that looks at a picture and says which of a few classes it belongs to (a "
                        "digit from 0 to 9, a breed of cat…). Loupe trains one from examples.",
    "label": "The right answer for a training picture: its class. Loupe reads it from the file's name, its "
             "folder or a table.",
    "validation set": "Pictures kept aside and never trained on. The model is checked on them after every epoch, "
                      "so we learn how it does on pictures it has not seen — the honest score.",
    "batch": "A handful of pictures (64 by default) the model looks at together before it adjusts itself once. "
             "A batch is one small step of learning.",
    "augmentation": "Small random changes to each training picture — a tilt, a zoom, a little more light — so the "
                    "model sees a slightly different picture every time and learns the thing, not the pixels.",
    "epoch": "One pass over every training picture. Training usually takes a few epochs.",
    "learning rate": "How big a step the model takes each time it adjusts itself. Too small and it barely learns; "
                     "too big and it overshoots and the loss explodes.",
    "loss": "A number saying how wrong the model is: 0 would be perfect, high means very wrong. Training is the "
            "art of making it go down on pictures the model has not seen.",
    "overfitting": "When the model memorises its training pictures instead of learning what they have in common: "
                   "the training loss keeps falling while the validation loss rises.",
    "pretrained model": "A network that already learned to see from a million photos (ImageNet). Starting from "
                        "it, a new task needs far fewer pictures and minutes.",
    "fine-tuning": "Training a pretrained model on a new task: first only its new last layers (the head), then "
                   "all of it, gently.",
    "confusion matrix": "A grid: one row per true class, one column per predicted class, each cell counting "
                        "pictures. The diagonal is what the model gets right; every other cell is a mix-up.",
    "accuracy": "The share of validation pictures the model classifies correctly.",
    "baseline": "The simplest answer that could work, measured before any training: here, give each picture the "
                "class whose average picture it looks most like. A trained model has to beat it to be worth anything.",
    "gradient": "For each number of the model, how much the loss grows when that number grows a little. Stepping "
                "every number a little against its gradient lowers the loss: that is how a model learns.",
    "feature map": "One channel of a layer's output: a small grid of numbers saying where in the picture that "
                   "channel found its pattern (an edge, a curve, a texture). Bright means found here.",
}


def slug(term: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", term.lower()).strip("-")


NOTES: dict[str, str] = {
    "data": "We start with pictures and their [[label]]s. Loupe reads each label from the file name (or its "
            "folder), then keeps some of the pictures aside — a fifth, unless the folders already say which — as the "
            "[[validation set]]: the model never trains on them, so they tell us honestly how well it does.",
    "show_batch": "This is a [[batch]]: what the model sees in one step of learning. Each picture is changed a "
                  "little at random — tilted, zoomed, lit differently. That is [[augmentation]]: the same {thing} "
                  "never looks quite the same twice, so the model has to learn what it shows, not the exact pixels.",
    "camera": "Here we make our own data set: a few shots of each thing we want the model to tell apart. Each "
              "folder of shots becomes a class — its [[label]].",
    "live": "The model now looks at the camera's picture several times a second and shows its three best guesses "
            "with how sure it is of each. When it guesses wrong, one click keeps that very picture with the right "
            "[[label]]; training again on it is how a model learns from its mistakes.",
    "lr_find": "How fast should the model learn? The finder trains for a moment while raising the "
               "[[learning rate]] from tiny to huge and plots the [[loss]]. On the left the loss barely moves "
               "(too slow); on the right it shoots up (too fast). A good rate sits on the falling part, well before "
               "the bottom. fastai's default, *valley*, is a point along the longest stretch where the loss keeps "
               "falling; *steep* marks where it falls fastest, *minimum* is a tenth of the rate at the bottom of "
               "the curve.",
    "train": "Two curves to watch. The orange one is the [[loss]] on the training pictures, batch by batch; the "
             "blue dots are the loss on the [[validation set]] after each [[epoch]]. Both going down: the model "
             "is learning. Training falling while validation rises: [[overfitting]].",
    "compare": "The same data, the same starting point, one setting changed — here you *see* what a choice does. "
               "Each colour is one value; the lowest validation [[loss]] wins.",
    "runs": "Every training run is kept, with its curves, so we can put runs side by side and see which choice "
            "worked.",
    "interpret": "Where is the model wrong? *Top losses* are the pictures it got most confidently wrong — often "
                 "a wrong label or an odd picture. The [[confusion matrix]] shows which classes it mixes up: the "
                 "diagonal is right, every other cell a mix-up; click one to see those pictures.",
    "clean": "A model is only as good as its [[label]]s. Here we look at the pictures it finds hardest and fix "
             "the wrong labels or remove the bad pictures — then train again.",
    "learning_numbers": "To a computer a picture is only numbers: one per pixel, from 0 (black) to 255 (white) — "
                        "three of them, red, green and blue, in a colour picture; here we show its brightness. Every "
                        "model Loupe trains sees nothing else: all it can learn are patterns in these numbers.",
    "learning_baseline": "Before training anything, the fastai book tries the simplest idea: average all the training "
                         "pictures of each class into one ideal {thing}, then give each [[validation set]] picture the "
                         "class of the average it is closest to. Closest can mean the mean absolute difference of the "
                         "pixels, or the root of the mean squared difference (which punishes big differences more). "
                         "That [[accuracy]] is the [[baseline]] a trained model must beat.",
    "learning_descent": "This is how every model learns, shown on a toy: fit a curve a·t² + b·t + c to a roller "
                        "coaster's measured speeds. *Initialise* picks random numbers a, b, c; *Predict* draws their "
                        "curve; the [[loss]] says how far it is from the points; the [[gradient]] says which way to "
                        "move each number; *Step* moves them a little that way — how far is the [[learning rate]]. "
                        "Repeat. Too small a rate and the curve barely moves; too large and each step overshoots, the "
                        "curve swings from one side to the other and the loss explodes.",
    "inside": "A network looks at a picture in stages. Each stage turns its input into [[feature map]]s: small "
              "grids, one per channel, bright where that channel found its pattern — early stages find edges and "
              "colours, later ones shapes and parts. Stage after stage the maps get smaller (the picture's detail "
              "is summed up) and more numerous (more kinds of pattern), until the head turns them into one score "
              "per class. Grad-CAM colours where each stage's maps pushed towards the prediction; click a map to see "
              "the pictures that light its channel up most.",
    "predict": "The real test: pictures the model has never seen. It gives each class a probability; the bars "
               "show its five best guesses.",
}

DEMO_STEPS: list[tuple[str, str, str]] = [  # (button, page, what to say)
    ("1 · The data: 1,797 handwritten digits", "pages/data.py",
     "Real digits, each file named after its digit. Show a batch, then one digit with many augmentations."),
    ("2 · How a computer learns: the book's chapter 4", "pages/learning.py",
     "A picture is numbers; the closest-average baseline to beat; gradient descent by hand: raise the rate "
     "until it bounces."),
    ("3 · Find a learning rate", "pages/lr_find.py", "Run the finder; the valley is a good rate. Use it."),
    ("4 · Train for a few epochs", "pages/train.py",
     "Train; watch both loss curves fall. About a minute on a laptop."),
    ("5 · Three learning rates, side by side", "pages/experiment.py",
     "The same data at three rates: too low barely moves, too high diverges, the valley wins."),
    ("6 · Where is it wrong?", "pages/interpret.py", "Top losses and the confusion matrix: click a cell."),
    ("7 · Look inside the network", "pages/inside.py",
     "Follow one digit through the blocks: the maps get smaller and more numerous. Click a map: what it responds to."),
    ("8 · Clean the data", "pages/clean.py", "The hardest images first: relabel or delete, undo any time."),
    ("9 · Your own classes: live from the camera", "pages/camera.py",
     "Take shots of two or three classes and train on them, then watch it live; That's wrong keeps a mistake as a "
     "new shot — Teachable Machine style."),
    ("10 · A report to take home", "pages/runs.py",
     "Make report, then Download report: one HTML file with the data, the curves, the confusion matrix and the "
     "top losses, for any browser, no network needed."),
]


def _thing() -> str:
    """What one item of the draft's data set is called in the notes."""
    return "digit" if draft().data.source.startswith("builtin:digits") else "picture"


def note(key: str) -> str:
    """A page's note as Markdown, its glossary terms linked and its words fitted to the data set."""
    return _linked(NOTES[key].replace("{thing}", _thing()))


def explaining() -> bool:
    return bool(EXPLAIN.get())


def _linked(text: str) -> str:
    """[[term]] → a link to the term's glossary entry (a new tab of this window, so nothing here is lost)."""
    def link(match: re.Match) -> str:
        shown, term = match.group(1), match.group(1).lower()
        base = term if term in GLOSSARY else term.rstrip("s")  # [[label]]s, [[epoch]]s
        return f"[{shown}](/glossary?draft={window_id()}#{slug(base)})"

    return re.sub(r"\[\[([^\]]+)\]\]", link, text)


def explain(key: str) -> None:
    """The page's plain-language note, when "Explain as I go" is on (nothing otherwise)."""
    if explaining():
        with st.container(key=f"explain-{key}"):
            st.info(note(key), icon=":material/school:")


def explain_toggle() -> None:
    """The sidebar's switch for the guided demo mode."""
    EXPLAIN.setdefault(False)
    st.toggle("Explain as I go", key=EXPLAIN.key, persist_state="session",
              help="Short notes on each page for an audience new to machine learning, with a glossary.")
