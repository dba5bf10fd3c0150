# What the kiosk shows (firmware/kiosk/ui.py).

from kiosk import ui


def test_every_screen_is_two_ascii_lines_of_sixteen():
    screens = [ui.boot("0.1.0"), ui.idle("A"), ui.passed("Nguyễn Văn An"), ui.unreadable(),
               ui.config_error("broker.password")]
    for reason in ui.REASONS:
        screens.append(ui.refused(reason))
    for s in screens:
        assert len(s.lines) == 2
        for line in s.lines:
            assert len(line) == ui.WIDTH, line
            for c in line:
                assert " " <= c <= "~", line
        assert s.led in ui.LED_RGB
        assert s.buzz is None or s.buzz in ui.BUZZ


def test_reason_texts_fit_without_cutting():
    for reason, text in ui.REASONS.items():
        assert len(text) <= ui.WIDTH, (reason, text)


def test_vietnamese_is_folded_to_ascii():
    assert ui.fold("Nguyễn Thị Ánh Đào, Phường Bến Nghé") == "Nguyen Thi Anh Dao, Phuong Ben Nghe"
    assert ui.fold("Nữ") == "Nu"
    assert ui.fold("NGUYỄN ĐỨC") == "NGUYEN DUC"
    assert ui.fold("Nguye\u0302\u0303n") == "Nguyen"  # decomposed (NFD) input
    assert ui.fold("日本") == "??"
    assert len(ui._FOLD_FROM) == len(ui._FOLD_TO)


def test_names_are_masked_and_identifier_never_shown():
    assert ui.mask_name("Nguyễn Văn An") == "NGUYEN V** A*"
    assert ui.mask_name("TRAN THI BINH") == "TRAN T** B***"
    assert ui.mask_name("") == ""
    s = ui.passed("Lê Minh Tuấn")
    assert s.lines[0].startswith("HOP LE") and "MINH" not in s.lines[1] and "TUAN" not in s.lines[1]
