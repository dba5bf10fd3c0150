# Classifying and reading the personal codes a kiosk accepts.
#
#   HC1:...                      EU DCC certificate (Vietnam's vaccination certificate)
#   6 fields, 4th is 0/1         PC-COVID personal QR: SoGiayTo|HoTen|NgaySinh|LoaiDinhDanh|QID|EXT
#   7 fields, or 6 with Nam/Nu   chip ID card (CCCD): CCCD|CMND|name|DDMMYYYY|sex|address|DDMMYYYY
#
# read() never raises on bad input; it returns a Code whose `status` says
# what happened, with a short reason code for the display.
# Heap: the split fields of one code (a few hundred bytes).

from kiosk import hc1

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

HC1 = "hc1"
PCCOVID = "pccovid"
CCCD = "cccd"

OK = const(0)  # well-formed, identity known
INVALID = const(1)  # recognised type, but a field is wrong
UNSUPPORTED = const(2)  # not a code this kiosk reads

MAX_TEXT = const(2048)

R_UNSUPPORTED = "unsupported"
R_ID_DIGITS = "id_digits"
R_OLD_ID = "old_id_digits"
R_NAME = "name"
R_DOB = "dob"
R_SEX = "sex"
R_ISSUE_DATE = "issue_date"
R_ID_TYPE = "id_type"
R_QID = "qid"
R_ADDRESS = "address"
R_EXT = "ext"
MAX_EXT = const(256)  # the EXT field of a PC-COVID code ('‹'-separated values)


class Code:
    def __init__(self, status, type_="", ident="", name="", reason="", cert=None):
        self.status = status
        self.type = type_
        self.ident = ident
        self.name = name
        self.reason = reason
        self.cert = cert


def _digits(s, n):
    return len(s) == n and s.isdigit()


def _leap(y):
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _valid_date(y, m, d):
    if y < 1900 or y > 2100 or m < 1 or m > 12 or d < 1:
        return False
    days = 29 if (m == 2 and _leap(y)) else _DAYS[m - 1]
    return d <= days


def _date_ddmmyyyy(s):
    if not _digits(s, 8):
        return False
    return _valid_date(int(s[4:8]), int(s[2:4]), int(s[0:2]))


def _ymd(ddmmyyyy):
    return ddmmyyyy[4:8] + ddmmyyyy[2:4] + ddmmyyyy[0:2]


def _masked_digits(s):
    # Digits where some may be masked with '*'.
    for c in s:
        if not (c == "*" or "0" <= c <= "9"):
            return False
    return True


def _date_iso_masked(s):
    # YYYY-MM-DD; PC-COVID may mask any digit with '*'. The parts that are
    # not masked must be plausible (a month 1-12, a day that month has).
    if len(s) != 10 or s[4] != "-" or s[7] != "-":
        return False
    y, m, d = s[0:4], s[5:7], s[8:10]
    if not (_masked_digits(y) and _masked_digits(m) and _masked_digits(d)):
        return False
    if "*" not in s:
        return _valid_date(int(y), int(m), int(d))
    if "*" not in y and not 1900 <= int(y) <= 2100:
        return False
    if "*" not in m and not 1 <= int(m) <= 12:
        return False
    if "*" not in d:
        days = 31
        if "*" not in m:
            days = _DAYS[int(m) - 1] if int(m) != 2 else 29
        if not 1 <= int(d) <= days:
            return False
    return True


def _name_ok(name, ascii_caps):
    if not name or len(name) > 64 or name.strip() != name:
        return False
    for c in name:
        if c == " ":
            continue
        if ascii_caps:
            if not ("A" <= c <= "Z"):
                return False
        elif c.isdigit() or c in "|<>{}[]\\\"=;":
            return False
    return True


def _read_pccovid(f):
    so_giay_to, ho_ten, ngay_sinh, loai, qid = f[0], f[1], f[2], f[3], f[4]
    # ID number: 9 (old CMND) or 12 (CCCD) digits, some masked with '*'.
    if not ((len(so_giay_to) == 9 or len(so_giay_to) == 12) and _masked_digits(so_giay_to)):
        return Code(INVALID, PCCOVID, reason=R_ID_DIGITS)
    if not _name_ok(ho_ten, True):
        return Code(INVALID, PCCOVID, reason=R_NAME)
    if not _date_iso_masked(ngay_sinh):
        return Code(INVALID, PCCOVID, reason=R_DOB)
    if loai != "0" and loai != "1":
        return Code(INVALID, PCCOVID, reason=R_ID_TYPE)
    if len(qid) > 64 or not _alnum(qid):
        return Code(INVALID, PCCOVID, reason=R_QID)
    if len(f[5]) > MAX_EXT:
        return Code(INVALID, PCCOVID, reason=R_EXT)
    ident = qid if qid else so_giay_to
    if "*" in ident:
        # A fully masked number and no QID identify nobody.
        if ident.count("*") == len(ident):
            return Code(INVALID, PCCOVID, reason=R_QID)
    return Code(OK, PCCOVID, ident=ident, name=ho_ten)


def _alnum(s):
    for c in s:
        if not ("0" <= c <= "9" or "A" <= c <= "Z" or "a" <= c <= "z" or c == "-" or c == "_"):
            return False
    return True


def _read_cccd(f):
    if len(f) == 7:
        number, old, name, dob, sex, address, issued = f
        if old and not _digits(old, 9):
            return Code(INVALID, CCCD, reason=R_OLD_ID)
    else:
        number, name, dob, sex, address, issued = f
    if not _digits(number, 12):
        return Code(INVALID, CCCD, reason=R_ID_DIGITS)
    if not _name_ok(name, False):
        return Code(INVALID, CCCD, reason=R_NAME)
    if not _date_ddmmyyyy(dob):
        return Code(INVALID, CCCD, reason=R_DOB)
    if sex != "Nam" and sex != "Nữ" and sex != "Nu":
        return Code(INVALID, CCCD, reason=R_SEX)
    if not address or len(address) > 200:
        return Code(INVALID, CCCD, reason=R_ADDRESS)
    if not _date_ddmmyyyy(issued) or _ymd(issued) < _ymd(dob):
        return Code(INVALID, CCCD, reason=R_ISSUE_DATE)  # no card before its holder's birth
    return Code(OK, CCCD, ident=number, name=name)


def read(text):
    """Classify and read one scanned code (str). Never raises."""
    if len(text) > MAX_TEXT:
        return Code(UNSUPPORTED, reason=R_UNSUPPORTED)
    if text.startswith("HC1:"):
        cert, reason = hc1.read(text)
        if cert is None:
            return Code(INVALID, HC1, reason=reason)
        if len(cert.uvci) > 64:
            return Code(INVALID, HC1, reason=hc1.R_NO_DCC)
        return Code(OK, HC1, ident=cert.uvci, name=cert.holder_name(), cert=cert)
    if "|" not in text:
        return Code(UNSUPPORTED, reason=R_UNSUPPORTED)
    f = text.split("|")
    if len(f) == 7:
        return _read_cccd(f)
    if len(f) == 6:
        if f[3] == "0" or f[3] == "1":
            return _read_pccovid(f)
        return _read_cccd(f)
    return Code(UNSUPPORTED, reason=R_UNSUPPORTED)
