# What the kiosk shows (firmware/kiosk/ui.py).

from kiosk import ui


def test_every_screen_is_two_ascii_lines_of_sixteen():
    screens = [ui.boot("0.1.0"), ui.idle("A"), ui.passed("Nguyễn Văn An"), ui.unreadable(),
               ui.config_error("broker.password"), ui.maintenance()]
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


def _result(verdict, how, reason=None, name="Nguyễn Văn An"):
    from kiosk.verdict import Result

    return Result(verdict, how, reason, ui.mask_name(name))


# Every reason the kiosk can give (kiosk/hc1.py, verdict.py, online.py, codes.py).
KIOSK_REASONS = (
    "no_trust_list", "no_signer", "bad_signature", "unsupported_alg", "expired",
    "signer_expired", "not_yet_valid", "wrong_key_usage", "no_clock", "not_accepted",
    "disease", "bad_entry", "vaccine_product", "too_few_doses", "too_recent",
    "vaccination_expired", "test_type", "positive_test", "test_expired", "recovery_too_recent",
    "recovery_expired", "denied", "offline", "online_timeout", "online_unknown",
    "online_refused", "not_checked", "isolation", "no_declaration", "ext",
)


def test_every_reason_has_vietnamese_text():
    for reason in KIOSK_REASONS:
        assert reason in ui.REASONS, reason
        s = ui.verdict(_result("fail", "verified", reason))
        assert s.lines[1] == ui.fit(ui.REASONS[reason]) and s.led == "red" and s.buzz == "fail"


def test_verdict_screens_say_how_it_was_decided():
    verified = ui.verdict(_result("pass", "verified"))
    online = ui.verdict(_result("pass", "online"))
    assert verified.lines == online.lines == (ui.fit("HOP LE - MOI VAO"), ui.fit("NGUYEN V** A*"))
    assert verified.led == "green" and verified.buzz == "pass"
    flagged = ui.verdict(_result("pass", "unverified", "online_timeout"))
    assert flagged.lines[0] == "MOI VAO-HAU KIEM" and flagged.led == "green"
    assert ui.verdict(_result("fail", "verified", "expired")).lines[0].startswith("KHONG HOP LE")
    unchecked = ui.verdict(_result("fail", "refused", "offline"))
    assert unchecked.lines == (ui.fit("CHUA XAC MINH"), ui.fit("Mat ket noi"))
    # A reason from the online check the kiosk does not know is shown as it is, cut to fit.
    odd = ui.verdict(_result("fail", "online", "quarantine_zone_residency"))
    assert odd.lines[1] == "quarantine_zone_"


def test_checking_fault_and_idle_screens():
    c = ui.checking(ui.mask_name("Trần Thị Bình"))
    assert c.lines == (ui.fit("DANG KIEM TRA..."), ui.fit("TRAN T** B***"))
    assert c.led == "blue" and c.buzz is None  # no sound until the verdict
    f = ui.scanner_fault()
    assert f.lines[0].startswith("LOI MAY QUET") and f.led == "red"
    assert ui.idle("A").lines[1] == ui.fit("Cong A")
    assert ui.idle("A", "scanner").lines[1] == ui.fit("LOI MAY QUET")
    for s in (c, f, ui.idle("A", "scanner")):
        assert all(len(line) == ui.WIDTH for line in s.lines)
