"""The Camera page's Live view: a run's model on the webcam stream, its top 3 over the video and beside it, and
*That's wrong*, which keeps the frame on screen as a shot of a camera data set, then *Train again*.

The video goes through streamlit-webrtc: the browser sends the camera's frames to this server, whose frame thread
draws the prediction on each (engine.results.live) and sends them back. The stream stops when the page no longer
draws the component (another page, or the Take shots view). On localhost no STUN/TURN server is needed, and none is
configured, so nothing is fetched from the network. A busy computer answers WebRTC's consent checks late; those late
answers count (ui/live_consent.py), so the stream does not end by itself.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine.data.camera import camera_root, class_shots, list_sets
from engine.data.resolve import resolve
from engine.errors import UserError
from engine.results.live import CAMERA_SIZE, MAX_PREDICTIONS_PER_S, LiveStream, save_frame
from engine.spec import override
from engine.store.runs import ACTIVE
from engine.train.export import ExportedModel, load_run
from ui.explain import explain
from ui.draft import set_draft
from ui.live_consent import patient_consent
from ui.shared import run_store
from ui.state import CAMERA_SET, SessionKey
from ui.text import md

try:
    import av
    from streamlit_webrtc import WebRtcMode, webrtc_streamer
except ImportError:  # said plainly on the page, with the shot-by-shot camera offered instead
    webrtc_streamer = None
else:
    patient_consent()

CAMERA_VIEW = SessionKey[str]("camera.view", "shots")  # the Camera page's view: "shots" or "live"
LIVE_RUN = SessionKey[int]("live.run_id")  # the run whose model watches
LIVE_CLASS = SessionKey[str]("live.class")  # the class a wrong frame is saved into
LIVE_STREAM = SessionKey[object]("live.stream")  # this window's LiveStream (one per window: its own frame thread)
LIVE_MESSAGE = SessionKey[tuple]("live.message")  # (kind, text) a callback leaves for the next run
READOUT_EVERY_S = 1.0  # the readout beside the video is redrawn this often while the video plays
RTC_CONFIGURATION = {"iceServers": []}  # localhost needs no STUN/TURN server: none is asked for
VIEWS = {"shots": "Take shots", "live": "Live"}
NO_WEBRTC = ("The live video cannot start here: the package streamlit-webrtc is not installed "
             "(pip install streamlit-webrtc). The shot-by-shot camera works without it.")


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def live_model(weights_path: str, mtime_ns: int) -> ExportedModel:
    """A run's saved model, loaded once for every window (predicting does not change it)."""
    return load_run(Path(weights_path))


def _is_camera_run(run: dict) -> bool:
    source = run["spec"].data.source or ""
    return bool(source) and Path(source).parent == camera_root()


def model_runs() -> dict[int, dict]:
    """The runs that saved a model, newest first, by id."""
    store = run_store()
    runs = store.runs()
    usable = runs[runs["weights_path"].notna() & ~runs["status"].isin(ACTIVE)] if len(runs) else runs
    return {int(i): store.run(int(i)) for i in usable["id"]}


def run_label(run: dict) -> str:
    """'#3 · hands · small · 92.0%', as the run picker shows it."""
    accuracy = f" · {run['accuracy']:.1%}" if run.get("accuracy") is not None else ""
    return f"#{run['id']} · {run['name']} · {run['model'].get('arch')}{accuracy}"


def pick_live_run(runs: dict[int, dict]) -> dict:
    """The run picker: every run that saved a model, the newest camera run chosen first."""
    ids = list(runs)
    if LIVE_RUN.get() not in ids:
        LIVE_RUN.set(next((i for i in ids if _is_camera_run(runs[i])), ids[0]))
    run_id = st.selectbox("Model of run", ids, format_func=lambda i: run_label(runs[i]), key=LIVE_RUN.key,
                          help="Every run that saved a model, newest first; the newest trained on camera shots is "
                               "chosen first.")
    return runs[int(run_id)]


def stream_for(exported: ExportedModel) -> LiveStream:
    """This window's stream, predicting with `exported` (the same stream, and frame thread, when the run changes)."""
    stream = LIVE_STREAM.get()
    if not isinstance(stream, LiveStream):
        stream = LiveStream(exported)
        LIVE_STREAM.set(stream)
    elif stream.exported is not exported:
        stream.use_model(exported)
    return stream


def _show_message() -> None:
    if LIVE_MESSAGE.is_set():
        kind, text = LIVE_MESSAGE.pop()
        (st.error if kind == "error" else st.success)(md(text))


def _wrong(stream: LiveStream, set_dir: Path, class_name: str) -> None:
    try:
        shot = save_frame(stream, set_dir, class_name)
    except UserError as e:
        LIVE_MESSAGE.set(("error", str(e)))
        return
    n = len(class_shots(set_dir).get(class_name, []))
    LIVE_MESSAGE.set(("success", f"Saved the frame into “{class_name}” of “{set_dir.name}” ({shot.name}; "
                                 f"{n} shots there now). Train again to learn from it."))


def _train_again(run: dict, set_dir: Path) -> None:
    """This window's settings become the run's, on the camera data set (with its new shots); a run of another data
    set brings its training settings, and the set's own label and split rules are guessed, as the Data page does."""
    spec = override(run["spec"], {"data.source": str(set_dir)})
    if Path(run["spec"].data.source or "") != set_dir:  # another data set's rules do not fit this one
        try:
            guessed = resolve(override(spec, {"data.label": None, "data.split": None}))
        except UserError as e:
            LIVE_MESSAGE.set(("error", f"“{set_dir.name}” cannot be trained on yet: {e}"))
            return
        spec = override(spec, {"data.label": guessed.data.label, "data.split": guessed.data.split})
    set_draft(spec)


def _readout(stream: LiveStream) -> None:
    with st.container(key="live-readout"):
        reading = stream.reading()
        if reading is None:
            st.caption("No prediction yet: press Start under the video (the browser asks to use the camera).")
            return
        for name, prob in reading.top:
            st.progress(min(max(prob, 0.0), 1.0), text=f"{md(name)} · {prob:.0%}")
        st.caption(f"{reading.count} predictions so far · {reading.fps:.1f} per second (at most "
                   f"{MAX_PREDICTIONS_PER_S:.0f} per second for each window watching)")


_readout_live = st.fragment(run_every=READOUT_EVERY_S)(_readout)


def readout(stream: LiveStream, playing: bool) -> None:
    """The newest top 3 as bars, and how many predictions so far; redrawn every READOUT_EVERY_S while playing."""
    (_readout_live if playing else _readout)(stream)


def video(stream: LiveStream) -> bool:
    """The webcam stream with the prediction drawn on it (True while it plays); says so when WebRTC cannot start."""
    if webrtc_streamer is None:
        st.error(NO_WEBRTC)
        return False

    def on_frame(frame: "av.VideoFrame") -> "av.VideoFrame":
        out = stream.frame(frame.to_ndarray(format="rgb24"))
        return av.VideoFrame.from_ndarray(out, format="rgb24")

    try:
        context = webrtc_streamer(
            key="live-video", mode=WebRtcMode.SENDRECV, rtc_configuration=RTC_CONFIGURATION,
            media_stream_constraints={"video": {"width": CAMERA_SIZE[0], "height": CAMERA_SIZE[1]}, "audio": False},
            video_frame_callback=on_frame, async_processing=True)
        return bool(context.state.playing)
    except Exception as e:  # the component fails in many ways (a missing frontend, a network stack): all mean the same
        st.error(f"The live video could not start ({md(type(e).__name__ if not str(e) else e)}). "
                 "Use Take shots instead: the shot-by-shot camera works without it.")
        return False


def live_view() -> None:
    """The Live view: pick a run, watch its predictions, save a wrong frame, train again."""
    explain("live")
    runs = model_runs()
    if not runs:
        st.info("No trained model yet: take shots of two or more classes, train on them, then come back to watch "
                "the model live.")
        st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
        return
    run = pick_live_run(runs)
    try:
        exported = live_model(run["weights_path"], Path(run["weights_path"], "model.pt").stat().st_mtime_ns)
    except (UserError, OSError) as e:
        st.error(f"This run's model cannot be used: {md(e)}")
        return
    stream = stream_for(exported)
    left, right = st.columns([3, 2])
    with left:
        playing = video(stream)
        st.caption("No picture? Without a camera, or if the browser blocks it or the video does not start, use "
                   "Take shots above: the shot-by-shot camera works without a live connection.")
    with right:  # nothing above the video changes while it plays: a new element there would restart the stream
        readout(stream, playing)
        wrong_frame_panel(run, stream)
        _show_message()


def wrong_frame_panel(run: dict, stream: LiveStream) -> None:
    """*That's wrong*: the frame on screen into the right class of a camera data set; then *Train again*."""
    sets = list_sets()
    if not sets:
        st.info("To keep frames the model gets wrong, make a camera data set first (Take shots).")
        return
    own = Path(run["spec"].data.source or "").name if _is_camera_run(run) else None
    if CAMERA_SET.get() not in sets:
        CAMERA_SET.set(own if own in sets else sets[-1])
    set_name = st.selectbox("Camera data set", sets, key=CAMERA_SET.key, help=f"Kept in {md(camera_root())}")
    set_dir = camera_root() / set_name
    try:
        classes = list(class_shots(set_dir))
    except UserError as e:
        st.error(md(e))
        return
    if not classes:
        st.info("This data set has no classes: add one in Take shots.")
        return
    if LIVE_CLASS.get() not in classes:
        LIVE_CLASS.set(classes[0])
    chosen = st.segmented_control("The right class", classes, format_func=md, key=LIVE_CLASS.key, required=True)
    c1, c2 = st.columns(2)
    c1.button("That's wrong", key="live.wrong", icon=":material/add_a_photo:", type="primary",
              on_click=_wrong, args=(stream, set_dir, chosen),
              help="Saves the frame on screen into the right class chosen above, as a new shot of the data set.")
    if c2.button("Train again", key="live.train_again", icon=":material/model_training:", on_click=_train_again,
                 args=(run, set_dir), help="Opens the Train page with this run's settings on this data set, "
                                           "its new shots included."):
        st.switch_page("pages/train.py")
