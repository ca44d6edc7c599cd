"""Messages a user reads never show an exception's class name or an errno code: bad pictures, downloads, weights."""
from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from engine.errors import UserError, plain_reason
from engine.data.decode_pool import presize_all
from engine.data.images import decode
from engine.train.models import download_weights, weights_status
from engine.data.sources import download_dataset

CODE_WORDS = re.compile(r"Errno|Error\b|Exception|[A-Z][a-z]+[A-Z]\w*Error|\bgaierror\b|urlopen")


def plain(text: str) -> bool:
    return not CODE_WORDS.search(text)


def test_a_file_that_is_not_a_picture_says_so_in_words(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is text, not a PNG")
    with pytest.raises(ValueError) as caught:
        decode(bad)
    assert str(caught.value) == "not a readable image (its content is not in a picture format Loupe knows)"
    truncated = tmp_path / "cut.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:80])
    gone = tmp_path / "link.png"
    gone.symlink_to(tmp_path / "nowhere.png")
    reasons = list(presize_all([bad, truncated, gone], 16, workers=1).failures.values())
    assert all(r and plain(r) for r in reasons), reasons
    assert any("missing" in r for r in reasons)  # the broken link


def test_a_download_that_cannot_find_its_server_says_offline_without_the_errno(tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_dns)
    with pytest.raises(UserError) as caught:
        download_dataset("MNIST_TINY", root=tmp_path, url="http://files.example/mnist_tiny.tgz", timeout=1)
    message = str(caught.value)
    assert "offline" in message and "the server's name could not be looked up" in message and plain(message), message
    status = weights_status("resnet18")
    assert status.state == "unavailable" and "offline" in status.reason and plain(status.reason), status.reason
    with pytest.raises(UserError) as caught:
        download_weights("resnet18", url="http://files.example/resnet18-f37072fd.pth")
    assert plain(str(caught.value)), str(caught.value)


@pytest.mark.parametrize("error, words", [
    (urllib.error.URLError(socket.gaierror(-2, "Name or service not known")), "the server's name could not be looked up"),
    (ConnectionRefusedError(111, "Connection refused"), "the server refused the connection"),
    (OSError(28, "No space left on device"), "no space left on device"),
    (FileNotFoundError(2, "No such file or directory"), "the file is missing (moved, deleted, or a link to nothing)"),
    (OSError("[Errno 5] Input/output error"), "input/output error"),
    (KeyError("x"), "an unexpected error inside Loupe"),
    (UserError("Your folder is empty."), "Your folder is empty."),
])
def test_plain_reason(error, words):
    assert plain_reason(error) == words
