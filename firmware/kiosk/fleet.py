# The operator's signed fleet documents a kiosk holds: the city's policy
# (fleet/policy) and the trust list of DCC signers (fleet/trust).
#
# A document is used only after kiosk/docs.py has verified its signature
# with the pinned operator key (config "operator_key"), its kind, that its
# serial is newer than the one held and that it is not stale; then its body
# must be a valid policy (kiosk/policy.py) or trust list (kiosk/trust.py).
# Anything else is rejected and the last good document stays in use. A good
# document is stored on flash as received (policy.jws, trust.jws, written to
# a temporary file and renamed, so a power cut leaves the old or the new one)
# and verified again at boot. Without any policy the built-in default applies;
# without a trust list no certificate can be verified.
# Heap: the policy (~2 KB) and the trust list's signers (~0.5 KB each); the
# document text only while it is verified (at most 16 KiB). The verifier
# (kiosk/docs.py) and the certificate parser (kiosk/der.py) are loaded only
# while a new document is taken, then unloaded (kiosk/__init__.py): documents
# come at boot and a few times a year, their code need not stay on the heap.

import binascii
import gc
import hashlib
import os

from kiosk import log, policy, trust, unload

KINDS = ("policy", "trust")
# Repeats of the document held (a retained message comes again after every
# reconnect) are not worth a warning: kiosk/docs.py R_SAME_SERIAL.
SAME = "same_serial"


class Fleet:
    def __init__(self, board, cfg):
        self.board = board
        self.key = None
        key = cfg.get("operator_key")
        if key:
            try:
                self.key = binascii.a2b_base64(key)
            except ValueError:
                log.error("fleet", "operator_key: not base64; no document can be verified")
        topics = cfg.get("fleet") or {}
        self.topics = {}
        for kind in KINDS:
            self.topics[topics.get(kind) or "fleet/" + kind] = kind
        self.policy = policy.default()
        self.trust = None
        self.serial = {"policy": 0, "trust": 0}
        # SHA-256 of each document held: the retained copy that comes again
        # after every reconnect is recognised without verifying it again.
        self._held = {"policy": b"", "trust": b""}
        self.accepted = 0
        self.rejected = 0
        self.last_error = None  # (kind, reason) of the last rejected document

    def _path(self, kind):
        return self.board.path(kind + ".jws")

    def load(self, now):
        """At boot: verify the documents stored on flash again."""
        for kind in KINDS:
            try:
                with open(self._path(kind), "rb") as f:
                    text = f.read()
            except OSError:
                log.info("fleet", "no stored %s document" % kind)
                continue
            self.apply(kind, text, now, store=False)
        if self.serial["policy"] == 0:
            log.info("fleet", "using the built-in policy (level %d)" % self.policy.level)

    def kind_of(self, topic):
        """'policy' or 'trust' for a fleet document topic, else None."""
        return self.topics.get(topic)

    def apply(self, kind, text, now, store=True):
        """Verify and take a document. Returns None (taken) or the reason it
        was rejected; on rejection nothing the kiosk holds changes."""
        reason = self._take(kind, text, now, store)
        if reason is None:
            self.accepted += 1
            log.info("fleet", "%s document %d in use" % (kind, self.serial[kind]))
        elif reason != SAME:
            self.rejected += 1
            self.last_error = (kind, reason)
            log.warn("fleet", "%s document rejected: %s" % (kind, reason))
        return reason

    def _take(self, kind, text, now, store):
        if self.key is None:
            return "no_operator_key"
        if isinstance(text, str):
            text = text.encode()
        # Bytes throughout (kiosk/docs.py): hashed and verified without copies.
        digest = hashlib.sha256(text).digest()
        if digest == self._held[kind]:
            return SAME
        try:
            return self._verify_and_take(kind, text, digest, now, store)
        finally:
            unload("docs", "der")  # loaded by docs.verify / trust.from_body
            gc.collect()  # the document's text, JSON and big integers

    def _verify_and_take(self, kind, text, digest, now, store):
        from kiosk import docs

        doc, reason = docs.verify(text, self.key, kind, self.serial[kind], now)
        del docs
        if reason:
            return reason
        body = doc["body"]
        new_policy = new_trust = None
        if kind == "policy":
            new_policy, err = policy.parse(body)
            if err:
                log.warn("fleet", "policy body: " + err)
                return "bad_policy"
        else:
            new_trust, err = trust.from_body(body)
            if err or new_trust is None:
                return err
            for index, why in new_trust.skipped:
                log.warn("fleet", "trust list entry %d skipped: %s" % (index, why))
        if store:
            try:
                self._store(kind, text)
            except OSError as e:
                # Still use it: it was verified. It is lost at the next boot.
                log.error("fleet", "cannot store the %s document: %s" % (kind, e))
        if new_policy is not None:
            self.policy = new_policy
        else:
            self.trust = new_trust
        self.serial[kind] = doc["serial"]
        self._held[kind] = digest
        return None

    def _store(self, kind, text):
        path = self._path(kind)
        tmp = path + ".new"
        with open(tmp, "wb") as f:
            f.write(text)
        try:
            os.remove(path)  # LittleFS renames over a file; other file systems may not
        except OSError:
            pass
        os.rename(tmp, path)
