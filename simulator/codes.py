"""Sample personal codes, as a scanner would read them, for the demo and the tests.

Deterministic for a given seed. Each `Sample` says what a kiosk must do with
it: show a pass and record a check-in with a given type and identifier, refuse
it (a known kind of code with a wrong field), or show "unreadable".

HC1 certificates are real EU DCC encodings (CBOR → COSE_Sign1 → zlib →
Base45), signed alternately by the TEST ONLY signers of simulator/signers.py:
PS256 (RSA-2048, like Viet Nam's signer) and ES256 (P-256). A kiosk verifies
them with the trust list `SampleFactory.trust_document()` gives.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache

from simulator import signers

PASS = "pass"
REFUSED = "refused"
UNREADABLE = "unreadable"

FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng",
          "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý"]
MIDDLE = ["Văn", "Thị", "Hữu", "Minh", "Ngọc", "Thanh", "Đức", "Quốc"]
GIVEN = ["An", "Bình", "Châu", "Dũng", "Hà", "Hải", "Hạnh", "Hùng", "Lan", "Linh", "Long",
         "Mai", "Nam", "Phúc", "Quân", "Tâm", "Thảo", "Trang", "Tuấn", "Vy", "Ánh", "Đạt"]
STREETS = ["Lê Lợi", "Nguyễn Huệ", "Hai Bà Trưng", "Điện Biên Phủ", "Võ Văn Tần",
           "Cách Mạng Tháng Tám", "Trần Hưng Đạo"]
WARDS = ["Phường Bến Nghé", "Phường Bến Thành", "Phường 6", "Phường Tân Định"]
DISTRICTS = ["Quận 1", "Quận 3", "Quận 5", "Quận 10", "Quận Bình Thạnh", "TP. Thủ Đức"]

_ASCII = str.maketrans(
    "àáảãạăằắẳẵặâầấẩẫậèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵđ"
    "ÀÁẢÃẠĂẰẮẲẴẶÂẦẤẨẪẬÈÉẺẼẸÊỀẾỂỄỆÌÍỈĨỊÒÓỎÕỌÔỒỐỔỖỘƠỜỚỞỠỢÙÚỦŨỤƯỪỨỬỮỰỲÝỶỸỴĐ",
    "aaaaaaaaaaaaaaaaaeeeeeeeeeeeiiiiiooooooooooooooooouuuuuuuuuuuyyyyyd"
    "AAAAAAAAAAAAAAAAAEEEEEEEEEEEIIIIIOOOOOOOOOOOOOOOOOUUUUUUUUUUUYYYYYD",
)


def ascii_caps(name: str) -> str:
    """'Nguyễn Văn An' -> 'NGUYEN VAN AN' (how PC-COVID writes names)."""
    return name.translate(_ASCII).upper()


@dataclass(frozen=True)
class Sample:
    """One thing shown to a kiosk's scanner and what the kiosk must do with it."""

    label: str
    payload: bytes
    expect: str  # PASS, REFUSED or UNREADABLE
    type: str | None = None  # check-in type when expect == PASS
    ident: str | None = None  # check-in identifier when expect == PASS
    terminated: bool = True  # False: sent without CR (the kiosk times the frame out)


@cache
def test_pki() -> signers.TestPKI:
    """The TEST ONLY PKI every sample is signed with (built once per process)."""
    return signers.TestPKI()


test_pki.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test


def sample_signers() -> list[signers.DccSigner]:
    """The signers of HC1 samples, in the order hc1() alternates them: PS256 then ES256."""
    pki = test_pki()
    return [pki.signer("vn"), pki.signer("es256")]


class SampleFactory:
    """Makes samples of every kind; the same seed gives the same stream."""

    def __init__(self, seed: int = 1, today: date | None = None) -> None:
        self.rng = random.Random(seed)
        self.rng.randrange(1, 2**255)  # (was the signer's key: keeps every seed's stream)
        # PSS salts come from their own stream so signing draws nothing from self.rng.
        self.salt_rng = random.Random(f"salt-{seed}")
        self.signers = sample_signers()
        # Certificates are dated relative to `today` so that they meet the
        # kiosk's default policy (kiosk/policy.py) on the kiosk's real clock.
        self.today = today or datetime.now(UTC).date()
        self._serial = 0

    # -- people --------------------------------------------------------------

    def _name(self) -> str:
        r = self.rng
        return f"{r.choice(FAMILY)} {r.choice(MIDDLE)} {r.choice(GIVEN)}"

    def _dob(self) -> date:
        return date(1950, 1, 1) + timedelta(days=self.rng.randrange(0, 365 * 55))

    def _digits(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789") for _ in range(n))

    def _address(self) -> str:
        r = self.rng
        return (f"{r.randrange(1, 300)} {r.choice(STREETS)}, {r.choice(WARDS)}, "
                f"{r.choice(DISTRICTS)}, TP. Hồ Chí Minh")

    # -- well-formed codes ---------------------------------------------------

    def cccd(self, with_old_number: bool | None = None) -> Sample:
        """Chip ID card QR: 7 fields, or the 6-field variant without the old CMND number."""
        r = self.rng
        number = "079" + self._digits(9)
        name = self._name()
        dob = self._dob().strftime("%d%m%Y")
        sex = r.choice(["Nam", "Nữ"])
        issued = (self.today - timedelta(days=r.randrange(30, 3000))).strftime("%d%m%Y")
        if with_old_number is None:
            with_old_number = r.random() < 0.7
        fields = [number]
        if with_old_number:
            fields.append(r.choice(["", self._digits(9)]))
        fields += [name, dob, sex, self._address(), issued]
        return Sample("cccd", "|".join(fields).encode(), PASS, "cccd", number)

    def pccovid(self) -> Sample:
        """PC-COVID personal QR: SoGiayTo|HoTen|NgaySinh|LoaiDinhDanh|QID|EXT (masked)."""
        r = self.rng
        number = "079" + self._digits(9)
        masked = number[:4] + "*****" + number[-3:]
        dob = self._dob().isoformat()
        if r.random() < 0.5:
            dob = dob[:4] + "-**-**"
        qid = "".join(r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(12))
        ext = r.choice(["", "1‹0‹" + self._digits(6)])
        fields = [masked, ascii_caps(self._name()), dob, r.choice("01"), qid, ext]
        return Sample("pccovid", "|".join(fields).encode(), PASS, "pccovid", qid)

    def hc1(self, kind: str | None = None) -> Sample:
        """An EU DCC vaccination, test or recovery certificate, ES256-signed."""
        r = self.rng
        kind = kind or r.choice("vvvtr")
        self._serial += 1
        uvci = f"URN:UVCI:01:VN:{self._serial:08d}{self._digits(8)}#{r.choice('ABCDEFGH')}"
        name = self._name()
        family, given = name.split(" ", 1)
        # Within the default policy (level 2): the last dose 14+ days ago, a
        # test taken yesterday (valid 72 hours), recovery 11-180 days ago.
        ago = {"v": r.randrange(14, 300), "t": 1, "r": r.randrange(11, 170)}[kind]
        issued = self.today - timedelta(days=ago)
        dcc: dict[str, object] = {
            "ver": "1.3.0",
            "nam": {"fn": family, "fnt": ascii_caps(family), "gn": given,
                    "gnt": ascii_caps(given).replace(" ", "<")},
            "dob": self._dob().isoformat(),
        }
        common = {"tg": "840539006", "co": "VN", "is": "Ministry of Health of Viet Nam", "ci": uvci}
        if kind == "v":
            dcc["v"] = [{**common, "vp": "1119349007", "mp": "EU/1/20/1528", "ma": "ORG-100030215",
                         "dn": 2, "sd": 2, "dt": issued.isoformat()}]
        elif kind == "t":
            dcc["t"] = [{**common, "tt": "LP217198-3", "ma": "1232", "tr": "260415000",
                         "sc": f"{issued.isoformat()}T08:00:00Z", "tc": "Bệnh viện Chợ Rẫy"}]
        else:
            dcc["r"] = [{**common, "fr": issued.isoformat(), "df": issued.isoformat(),
                         "du": (issued + timedelta(days=180)).isoformat()}]
        iat = int((issued - date(1970, 1, 1)).total_seconds())
        signer = self.signers[self._serial % 2]  # PS256 and ES256 in turn
        text = signers.sign_hc1(signer, dcc, iat=iat, exp=iat + 365 * 86400, rng=self.salt_rng)
        return Sample(f"hc1-{kind}", text.encode(), PASS, "hc1", uvci)

    # -- what a kiosk needs to verify the HC1 samples -------------------------

    @staticmethod
    def trust_body() -> dict[str, object]:
        """Trust list body with the samples' signers."""
        return signers.trust_body(sample_signers())

    @staticmethod
    def trust_document(serial: int = 1) -> str:
        """The samples' trust list as a document signed by the test operator."""
        return test_pki().trust_document(sample_signers(), serial)

    @staticmethod
    def operator_key_b64() -> str:
        """The test operator's public key, as a kiosk config's `operator_key`."""
        return test_pki().operator_key_b64

    # -- refused: a known kind with a wrong field -----------------------------

    def cccd_bad_date(self) -> Sample:
        good = self.cccd(with_old_number=True).payload.decode().split("|")
        good[3] = "31022001"  # 31 February
        return Sample("cccd-bad-date", "|".join(good).encode(), REFUSED)

    def cccd_short_number(self) -> Sample:
        good = self.cccd(with_old_number=False).payload.decode().split("|")
        good[0] = good[0][:11]
        return Sample("cccd-11-digits", "|".join(good).encode(), REFUSED)

    def hc1_corrupt(self) -> Sample:
        text = self.hc1("v").payload.decode()
        cut = len(text) // 2
        # Lower-case letters are outside the Base45 alphabet.
        return Sample("hc1-corrupt", (text[:cut] + "abc" + text[cut + 3:]).encode(), REFUSED)

    # -- unreadable ----------------------------------------------------------

    def unsupported(self) -> Sample:
        text = self.rng.choice(["https://example.com/menu", "WIFI:S:cafe;T:WPA;P:12345678;;",
                                "8934588012228", "hello"])
        return Sample("unsupported", text.encode(), UNREADABLE)

    def binary_garbage(self) -> Sample:
        """Random bytes (never CR/LF), made invalid UTF-8 for sure."""
        body = bytes(self.rng.choice([b for b in range(256) if b not in (10, 13)])
                     for _ in range(self.rng.randrange(5, 300)))
        return Sample("binary-garbage", b"\xff" + body, UNREADABLE)

    def invalid_utf8(self) -> Sample:
        return Sample("invalid-utf8", b"079201001234|Nguy" + b"\xc3\x28n|x", UNREADABLE)

    def oversized_unterminated(self) -> Sample:
        """10 KB of printable text and no terminator."""
        body = bytes(self.rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(10240))
        return Sample("oversized-10k", body, UNREADABLE, terminated=False)

    # -- streams -------------------------------------------------------------

    def well_formed(self) -> Sample:
        return self.rng.choice([self.cccd, self.pccovid, self.hc1])()

    def stream(self, n: int, bad_ratio: float = 0.15) -> list[Sample]:
        """n samples: mostly well-formed codes of every type, some refused and unreadable."""
        bad = [self.cccd_bad_date, self.cccd_short_number, self.hc1_corrupt, self.unsupported,
               self.binary_garbage, self.invalid_utf8, self.oversized_unterminated]
        out = []
        for _ in range(n):
            if self.rng.random() < bad_ratio:
                out.append(self.rng.choice(bad)())
            else:
                out.append(self.well_formed())
        return out
