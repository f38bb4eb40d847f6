#!/usr/bin/env python3
"""Re-sign the signed sample events with the current time (python3, stdlib only).

Signed webhook requests are refused more than 300 s away from the server clock, and events older
than MAX_EVENT_AGE_DAYS (30) are rejected, so the committed samples go stale. Run this right before
`sam local invoke`:

    python3 events/sign.py            # re-sign the webhook samples
    python3 events/sign.py --sqs      # also move the SQS sample's timestamps to now
    python3 events/sign.py --now 1764000000   # use a fixed unix time instead of the clock

What it rewrites, in place:
  webhook-facebook.json  entry[].time and every leadgen created_time -> now; the body is
                         re-serialised and X-Hub-Signature-256 recomputed over it.
  webhook-tiktok.json    TikTok-Signature  t=<now>,s=<HMAC of "<t>.<body>">
  webhook-generic.json   X-Signature       t=<now>,v1=<HMAC of "<t>.<body>">
  (all three)            requestContext.time / timeEpoch and content-length.
  sqs-process-batch.json (only with --sqs) receivedAt and event.timestamp in every envelope, the
                         Facebook payload's created_time, SentTimestamp and the MD5s.

The secrets below are the local-only sample values listed in events/README.md. Never use them for
a deployed stack.
"""

import argparse
import hashlib
import hmac
import json
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent

FACEBOOK_APP_SECRET = b"sample-facebook-app-secret"
TIKTOK_WEBHOOK_SECRET = b"sample-tiktok-secret"
# WEBHOOK_SECRETS=shop=sample-shop-secret
GENERIC_SECRETS = {"shop": b"sample-shop-secret"}


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def load(name):
    with open(HERE / name, encoding="utf-8") as f:
        return json.load(f)


def save(name, doc):
    with open(HERE / name, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")


def hmac_hex(secret, message):
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def touch_request(doc, now):
    """Keeps the request metadata consistent with the new time and body."""
    ctx = doc["requestContext"]
    ctx["timeEpoch"] = now * 1000
    ctx["time"] = datetime.fromtimestamp(now, timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")
    if "body" in doc and not doc.get("isBase64Encoded"):
        doc["headers"]["content-length"] = str(len(doc["body"].encode("utf-8")))


def timestamped(secret, mac_key, now, body):
    return f"t={now},{mac_key}=" + hmac_hex(secret, f"{now}.{body}".encode("utf-8"))


def sign_facebook(now):
    name = "webhook-facebook.json"
    doc = load(name)
    body = json.loads(doc["body"])
    for entry in body.get("entry", []):
        entry["time"] = now
        for change in entry.get("changes", []):
            value = change.get("value")
            if change.get("field") == "leadgen" and isinstance(value, dict) and "created_time" in value:
                value["created_time"] = now - 30
    doc["body"] = compact(body)
    doc["headers"]["x-hub-signature-256"] = "sha256=" + hmac_hex(
        FACEBOOK_APP_SECRET, doc["body"].encode("utf-8")
    )
    touch_request(doc, now)
    save(name, doc)
    return name


def sign_tiktok(now):
    name = "webhook-tiktok.json"
    doc = load(name)
    doc["headers"]["tiktok-signature"] = timestamped(TIKTOK_WEBHOOK_SECRET, "s", now, doc["body"])
    touch_request(doc, now)
    save(name, doc)
    return name


def sign_generic(now):
    name = "webhook-generic.json"
    doc = load(name)
    source = doc["pathParameters"]["source"]
    doc["headers"]["x-signature"] = timestamped(GENERIC_SECRETS[source], "v1", now, doc["body"])
    touch_request(doc, now)
    save(name, doc)
    return name


def refresh_sqs(now):
    name = "sqs-process-batch.json"
    doc = load(name)
    stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    for i, record in enumerate(doc["Records"]):
        try:
            envelope = json.loads(record["body"])
        except ValueError:
            envelope = None  # the poison message stays as it is
        if isinstance(envelope, dict) and isinstance(envelope.get("event"), dict):
            envelope["receivedAt"] = stamp
            event = envelope["event"]
            event["timestamp"] = stamp
            payload = event.get("payload")
            if event.get("source") == "facebook" and isinstance(payload, dict) and "created_time" in payload:
                payload["created_time"] = now
            record["body"] = compact(envelope)
            record["md5OfBody"] = hashlib.md5(record["body"].encode("utf-8")).hexdigest()
        sent = now * 1000 + 250 + i
        record["attributes"]["SentTimestamp"] = str(sent)
        record["attributes"]["ApproximateFirstReceiveTimestamp"] = str(sent + 40)
    save(name, doc)
    return name


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--now", type=int, help="unix seconds to sign with (default: the clock)")
    parser.add_argument("--sqs", action="store_true", help="also refresh sqs-process-batch.json")
    args = parser.parse_args()
    now = args.now if args.now is not None else int(time.time())
    done = [sign_facebook(now), sign_tiktok(now), sign_generic(now)]
    if args.sqs:
        done.append(refresh_sqs(now))
    for name in done:
        print(f"updated events/{name} (t={now})")


if __name__ == "__main__":
    main()
