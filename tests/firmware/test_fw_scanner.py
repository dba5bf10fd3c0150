# Frame reassembly from the scanner UART (firmware/kiosk/scanner.py).

from kiosk.scanner import TIMED_OUT, TOO_LONG, FrameReader


def _diff(a, b):
    return a - b


def test_frames_split_on_cr_and_crlf():
    r = FrameReader()
    out = []
    r.feed(b"ABC\rDEF\r\nGH", 0, out)
    assert out == [b"ABC", b"DEF"]
    r.feed(b"I\r", 10, out)
    assert out == [b"ABC", b"DEF", b"GHI"]


def test_frame_arrives_in_single_bytes():
    r = FrameReader()
    out = []
    for i, b in enumerate(b"HC1:XYZ\r"):
        r.feed(bytes([b]), i, out)
    assert out == [b"HC1:XYZ"]


def test_oversized_frame_is_one_unreadable_then_next_frame_reads():
    r = FrameReader(max_frame=64)
    out = []
    r.feed(b"A" * 1000, 0, out)
    assert out == []  # reported when the frame ends, not before
    r.feed(b"B" * 1000 + b"\r", 5, out)
    assert out == [TOO_LONG]
    r.feed(b"OK\r", 6, out)
    assert out == [TOO_LONG, b"OK"]


def test_unterminated_frame_times_out_after_the_gap():
    r = FrameReader(gap_ms=300)
    out = []
    r.feed(b"PARTIAL", 1000, out)
    r.tick(1299, out, _diff)
    assert out == []
    r.tick(1300, out, _diff)
    assert out == [TIMED_OUT]
    r.feed(b"NEXT\r", 1400, out)
    assert out == [TIMED_OUT, b"NEXT"]


def test_oversized_unterminated_frame_reports_too_long_on_the_gap():
    r = FrameReader(max_frame=16, gap_ms=300)
    out = []
    r.feed(b"X" * 10240, 0, out)
    r.tick(400, out, _diff)
    assert out == [TOO_LONG]
    assert not r.pending()


def test_empty_lines_are_ignored():
    r = FrameReader()
    out = []
    r.feed(b"\r\n\r\n\r", 0, out)
    assert out == []
