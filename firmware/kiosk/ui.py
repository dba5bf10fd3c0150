# What the kiosk shows: two 16-character LCD lines, an LED colour and a
# buzzer pattern for each situation. Texts are Vietnamese folded to ASCII
# (HD44780 character LCDs have no Vietnamese glyphs). A person's name is
# shown masked; the identifier is never shown.
# Heap: a few short strings per screen.

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

WIDTH = const(16)

# LED colours (name -> 0..255 RGB); boards map them to their LED.
LED_RGB = {
    "off": (0, 0, 0),
    "green": (0, 255, 0),
    "red": (255, 0, 0),
    "amber": (255, 120, 0),
    "blue": (0, 0, 80),
}

# Buzzer patterns: (on_ms, off_ms) pairs, played without blocking.
BUZZ = {
    "pass": ((90, 0),),
    "fail": ((400, 120), (400, 0)),
    "retry": ((70, 70), (70, 0)),
}

# Vietnamese letters with diacritics and their ASCII base letter. Spelled out
# in both cases because MicroPython's str.upper() only knows ASCII; searched
# with str.find rather than a dict to keep ~4 KB off the heap.
_FOLD_FROM = (
    "àáảãạăằắẳẵặâầấẩẫậèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵđ"
    "ÀÁẢÃẠĂẰẮẲẴẶÂẦẤẨẪẬÈÉẺẼẸÊỀẾỂỄỆÌÍỈĨỊÒÓỎÕỌÔỒỐỔỖỘƠỜỚỞỠỢÙÚỦŨỤƯỪỨỬỮỰỲÝỶỸỴĐ"
)
_FOLD_TO = (
    "aaaaaaaaaaaaaaaaaeeeeeeeeeeeiiiiiooooooooooooooooouuuuuuuuuuuyyyyyd"
    "AAAAAAAAAAAAAAAAAEEEEEEEEEEEIIIIIOOOOOOOOOOOOOOOOOUUUUUUUUUUUYYYYYD"
)


def fold(text):
    """Vietnamese text -> printable ASCII: diacritics dropped, combining marks
    (decomposed text) removed, anything else unknown becomes '?'."""
    out = []
    for c in text:
        if " " <= c <= "~":
            out.append(c)
        elif "\u0300" <= c <= "\u036f":
            continue
        else:
            i = _FOLD_FROM.find(c)
            out.append(_FOLD_TO[i] if i >= 0 else "?")
    return "".join(out)


def fit(text):
    """Fold and pad/cut to exactly one LCD line."""
    text = fold(text)
    if len(text) > WIDTH:
        return text[:WIDTH]
    return text + " " * (WIDTH - len(text))


def mask_name(name):
    """'NGUYEN VAN AN' -> 'NGUYEN V** A*': the family name, then initials."""
    words = fold(name).upper().split()
    if not words:
        return ""
    out = [words[0]]
    for w in words[1:]:
        out.append(w[0] + "*" * (len(w) - 1))
    return " ".join(out)


# Reason code -> second line when a code is refused (or a pass is flagged).
# Reason codes are the check-in's "reason" (docs/protocol.md); one the kiosk
# does not know (from the online check) is shown as it is.
REASONS = {
    # reading the code (kiosk/codes.py, kiosk/hc1.py)
    "unsupported": "Ma khong ho tro",
    "hc1_base45": "Loi ma HC1",
    "hc1_zlib": "Loi ma HC1",
    "hc1_too_big": "Ma HC1 qua lon",
    "hc1_cose": "Loi chu ky HC1",
    "hc1_claims": "Loi du lieu HC1",
    "hc1_no_dcc": "Thieu chung nhan",
    "id_digits": "Sai so giay to",
    "old_id_digits": "Sai so CMND",
    "name": "Sai ho ten",
    "dob": "Sai ngay sinh",
    "sex": "Sai gioi tinh",
    "issue_date": "Sai ngay cap",
    "id_type": "Sai loai ID",
    "qid": "Sai ma QID",
    "address": "Sai dia chi",
    "ext": "Sai truong EXT",
    "storage": "Loi bo nho",
    # signature and validity (kiosk/hc1.py verify)
    "no_trust_list": "Thieu DS tin cay",
    "no_signer": "Khong ro noi cap",
    "bad_signature": "Sai chu ky",
    "unsupported_alg": "Chu ky k ho tro",
    "expired": "Da het han",
    "signer_expired": "Noi cap het han",
    "not_yet_valid": "Chua co hieu luc",
    "wrong_key_usage": "Sai quyen ky",
    "no_clock": "Chua dong bo gio",
    # the city's rules (kiosk/verdict.py)
    "not_accepted": "Khong chap nhan",
    "disease": "Khong phai COVID",
    "bad_entry": "Loi du lieu",
    "vaccine_product": "Vaccine k hop le",
    "too_few_doses": "Chua du mui",
    "too_recent": "Chua du ngay",
    "vaccination_expired": "Tiem qua lau",
    "test_type": "Loai XN k hop le",
    "positive_test": "XN duong tinh",
    "test_expired": "XN qua han",
    "recovery_too_recent": "Moi khoi benh",
    "recovery_expired": "Het han hoi phuc",
    "denied": "Gap nhan vien",
    # the online check and the offline rule (kiosk/online.py)
    "offline": "Mat ket noi",
    "online_timeout": "Khong co tra loi",
    "online_unknown": "Khong xac minh",
    "online_refused": "Bi tu choi",
    "not_checked": "Khong kiem tra",
    "isolation": "Dang cach ly",
    "no_declaration": "Chua khai bao",
}

# Refusals that say nothing about the code itself: it could not be checked.
UNCHECKED = ("offline", "online_timeout", "online_unknown", "not_checked")


class Screen:

    def __init__(self, line1, line2, led, buzz=None):
        self.lines = (fit(line1), fit(line2))
        self.led = led
        self.buzz = buzz


def boot(version):
    return Screen("KHOI DONG...", "fw " + version, "blue")


def idle(gate, fault=None):
    """The waiting screen; `fault` ("scanner") replaces the gate line while a
    part is out of order, so staff see it without a manual."""
    if fault == "scanner":
        return Screen("MOI QUET MA QR", "LOI MAY QUET", "amber")
    return Screen("MOI QUET MA QR", "Cong " + gate, "blue")


def passed(name):
    return Screen("HOP LE - MOI VAO", mask_name(name), "green", "pass")


def refused(reason):
    return Screen("KHONG HOP LE", REASONS.get(reason, reason), "red", "fail")


def verdict(result):
    """The screen for a verdict (kiosk/verdict.py Result): line one the
    verdict, line two the masked name (pass) or the reason (fail)."""
    if result.verdict == "pass":
        if result.how == "unverified":  # admitted by the offline rule: post-inspection
            return Screen("MOI VAO-HAU KIEM", result.name, "green", "pass")
        return Screen("HOP LE - MOI VAO", result.name, "green", "pass")
    reason = result.reason or ""
    head = "CHUA XAC MINH" if reason in UNCHECKED else "KHONG HOP LE"
    return Screen(head, REASONS.get(reason, reason), "red", "fail")


def checking(name):
    """While the online check runs (at most the policy's deadline)."""
    return Screen("DANG KIEM TRA...", name, "blue")


def scanner_fault():
    return Screen("LOI MAY QUET", "Kiem tra day noi", "red", "fail")


def unreadable():
    return Screen("KHONG DOC DUOC", "Xin quet lai", "amber", "retry")


def config_error(field):
    return Screen("LOI CAU HINH", field, "red", "fail")


def maintenance():
    """The app stopped for a technician (ctrl-C: kioskctl, mpremote): no scanning."""
    return Screen("BAO TRI", "Tam ngung quet", "amber")
