# Reading personal codes (firmware/kiosk/codes.py, hc1.py, base45.py, cbor.py).

import fwtest

from kiosk import base45, cbor, codes, hc1


def test_samples_of_every_kind_read_as_expected():
    for s in fwtest.samples():
        code = codes.read(s["text"])
        if s["expect"] == "pass":
            assert code.status == codes.OK, (s["label"], code.reason)
            assert code.type == s["type"], s["label"]
            assert code.ident == s["ident"], s["label"]
            assert code.name
        else:
            assert code.status == codes.INVALID, s["label"]
            assert code.reason, s["label"]


def test_cccd_seven_and_six_fields():
    seven = "079201001234|123456789|Nguyễn Văn An|01011990|Nam|12 Lê Lợi, Q1|15082021"
    six = "079201001234|Trần Thị Bình|29022000|Nữ|5 Hai Bà Trưng, Q3|01012022"
    for text in (seven, six):
        c = codes.read(text)
        assert c.status == codes.OK and c.type == codes.CCCD and c.ident == "079201001234"
    c = codes.read("079201001234||Nguyễn Văn An|01011990|Nam|12 Lê Lợi|15082021")
    assert c.status == codes.OK  # empty old CMND number is allowed


def test_cccd_field_errors_name_the_field():
    base = ["079201001234", "123456789", "Nguyễn Văn An", "01011990", "Nam", "12 Lê Lợi",
            "15082021"]
    cases = [
        (0, "07920100123", codes.R_ID_DIGITS),
        (0, "07920100123A", codes.R_ID_DIGITS),
        (1, "12345", codes.R_OLD_ID),
        (2, "", codes.R_NAME),
        (3, "29022001", codes.R_DOB),  # 2001 is not a leap year
        (3, "1990-01-01", codes.R_DOB),
        (4, "X", codes.R_SEX),
        (5, "", codes.R_ADDRESS),
        (6, "15132021", codes.R_ISSUE_DATE),
    ]
    for index, value, reason in cases:
        f = list(base)
        f[index] = value
        c = codes.read("|".join(f))
        assert c.status == codes.INVALID and c.reason == reason, (index, value, c.reason)


def test_pccovid_variants_and_errors():
    ok = [
        "079201001234|NGUYEN VAN AN|1990-01-01|0|ABCDEF123456|",
        "0792****1234|NGUYEN VAN AN|1990-**-**|1|ABCDEF123456|1‹0‹123",
        "*********|TRAN THI B|****-**-**|0|QID9|",
        "079201001234|NGUYEN VAN AN|1990-01-01|0||",
    ]
    for text in ok:
        c = codes.read(text)
        assert c.status == codes.OK and c.type == codes.PCCOVID, (text, c.reason)
    assert codes.read(ok[0]).ident == "ABCDEF123456"
    assert codes.read(ok[3]).ident == "079201001234"  # no QID: the ID number
    bad = [
        ("07920100|NGUYEN VAN AN|1990-01-01|0|Q|", codes.R_ID_DIGITS),
        ("079201001234|Nguyen Van An|1990-01-01|0|Q|", codes.R_NAME),
        ("079201001234|NGUYEN VAN AN|1990-13-01|0|Q|", codes.R_DOB),
        ("079201001234|NGUYEN VAN AN|01011990|0|Q|", codes.R_DOB),
        ("079201001234|NGUYEN VAN AN|1990-01-01|1|Q Q|", codes.R_QID),
        ("************|NGUYEN VAN AN|1990-01-01|1||", codes.R_QID),
    ]
    for text, reason in bad:
        c = codes.read(text)
        assert c.status == codes.INVALID and c.reason == reason, (text, c.reason)


def test_anything_else_is_unsupported():
    for text in ("", "hello", "https://example.com", "a|b", "a|b|c|d|e|f|g|h", "HC2:ABC"):
        assert codes.read(text).status == codes.UNSUPPORTED, text
    assert codes.read("x" * 5000).status == codes.UNSUPPORTED


def test_hc1_reads_certificate_parts():
    for s in fwtest.samples():
        if s["type"] != "hc1":
            continue
        cert, reason = hc1.read(s["text"])
        assert reason is None
        assert cert.uvci == s["ident"]
        assert cert.kind in ("v", "t", "r")
        # ES256 (64-byte r||s) or PS256 (RSA-2048: 256 bytes) samples
        assert len(cert.signature) in (64, 256) and cert.protected and cert.payload
        assert cert.claims[1] == "VN"


# zlib.compress(b"\0" * 200000, 9): 200 KB that inflate from a few hundred bytes.
_BOMB = bytes.fromhex(
    "78daedc13101000000c2a0f54f6d067fa00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000080d7000d6d0001"
)


def test_hc1_decompression_bomb_is_refused():
    cert, reason = hc1.read("HC1:" + _b45encode(_BOMB))
    assert cert is None and reason == hc1.R_TOO_BIG


def test_hc1_corrupt_zlib_and_cose_are_refused():
    assert hc1.read("HC1:" + _b45encode(b"\x78\xda\x00\x01\x02"))[1] == hc1.R_ZLIB
    assert hc1.read("HC1:" + _b45encode(b"\x01\x02"))[1] == hc1.R_COSE  # CBOR int, trailing
    assert hc1.read("HC1:" + _b45encode(b"\x84\x40\xa0\x40\x40"))[1] == hc1.R_CLAIMS


def _b45encode(data):
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
    out = []
    for i in range(0, len(data) - 1, 2):
        v = data[i] * 256 + data[i + 1]
        out.append(alphabet[v % 45] + alphabet[(v // 45) % 45] + alphabet[v // 2025])
    if len(data) % 2:
        v = data[-1]
        out.append(alphabet[v % 45] + alphabet[v // 45])
    return "".join(out)


def test_base45_round_trip_and_rejects():
    for data in (b"", b"a", b"ab", b"Hello!!", bytes(range(256))):
        assert base45.decode(_b45encode(data)) == data
    assert base45.decode("GGW") is None  # 65535 < value: out of range
    assert base45.decode("A") is None  # a single leftover character
    assert base45.decode("ab") is None  # lower case is not in the alphabet


def test_cbor_decodes_and_bounds():
    assert cbor.decode(b"\x83\x01\x02\x03") == [1, 2, 3]
    assert cbor.decode(b"\xbf\x61\x61\x01\xff") == {"a": 1}  # indefinite map
    assert cbor.decode(b"\x39\x01\x03") == -260
    assert cbor.decode(b"\xd2\x82\x40\xa0") == [b"", {}]  # tag 18 unwrapped
    assert cbor.decode(b"\xf9\x3c\x00") == 1.0
    fwtest.raises(ValueError, cbor.decode, b"\x5a\xff\xff\xff\xff")  # length beyond data
    fwtest.raises(ValueError, cbor.decode, b"\x9a\xff\xff\xff\xff")  # array beyond data
    fwtest.raises(ValueError, cbor.decode, b"\x81" * 40 + b"\x01")  # too deep
    fwtest.raises(ValueError, cbor.decode, b"\x01\x02")  # trailing bytes
    fwtest.raises(ValueError, cbor.decode, b"\xa1\x80\x01")  # array as map key
    fwtest.raises(ValueError, cbor.decode, b"\x9f" + b"\x00" * 5000 + b"\xff")  # too many items


def test_masked_dates_must_still_be_plausible():
    base = "079201001234|NGUYEN VAN AN|%s|0|QID1|"
    for dob in ("1990-**-**", "****-**-**", "19**-0*-1*", "1990-02-**", "****-02-29",
                "1990-**-31"):
        c = codes.read(base % dob)
        assert c.status == codes.OK, (dob, c.reason)
    for dob in ("1990-13-**", "****-00-**", "1990-02-30", "1990-**-32", "3000-**-**",
                "1990-*-01", "1990/**/**", "19a0-**-**"):
        c = codes.read(base % dob)
        assert c.status == codes.INVALID and c.reason == codes.R_DOB, (dob, c.reason)


def test_pccovid_ext_fields_and_cccd_dates():
    ext = "1‹0‹" + "‹".join(str(i) for i in range(10))
    assert codes.read("079201001234|NGUYEN VAN AN|1990-01-01|0|QID1|" + ext).status == codes.OK
    c = codes.read("079201001234|NGUYEN VAN AN|1990-01-01|0|QID1|" + "‹x" * 200)
    assert c.status == codes.INVALID and c.reason == codes.R_EXT
    # A card cannot be issued before its holder was born.
    c = codes.read("079201001234||Nguyễn Văn An|01011990|Nam|12 Lê Lợi|31121989")
    assert c.status == codes.INVALID and c.reason == codes.R_ISSUE_DATE


def test_utf8_names_and_addresses_are_kept_for_display_only():
    text = "079301009999|Đặng Thị Ánh Tuyết|29022000|Nữ|Số 5, Hẻm 12/3 Đường Điện Biên Phủ|01012022"
    c = codes.read(text)
    assert c.status == codes.OK and c.type == codes.CCCD and c.name == "Đặng Thị Ánh Tuyết"
    assert c.ident == "079301009999"  # the identifier, never the name, is the check-in's id
    c = codes.read("079201001234||Nguyễn Văn 3|01011990|Nam|12 Lê Lợi|15082021")
    assert c.status == codes.INVALID and c.reason == codes.R_NAME
