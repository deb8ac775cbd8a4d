"""Pre-provisioning hook of fleet provisioning by claim: allow a serial the operator put on the allow-list, claimed
with a claim certificate that ``iotpipe fleet claim create`` registered and that has not expired.

This file is inlined into the template (``Code.ZipFile``, stdlib + boto3) and run as it is by ``iotpipe local``'s
provisioning emulator. AWS IoT waits 5 s for the hook and refuses the device when it fails, so the table is read in
one BatchGetItem with short timeouts and no retries: a slow table refuses a device (it can retry) instead of
hanging it.
"""
import json
import os
import re
import time

import boto3
from botocore.config import Config

TABLE = os.environ.get("ALLOW_TABLE", "")
SERIAL = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
DB = None


def _db():
    global DB
    if DB is None:
        DB = boto3.client("dynamodb", config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}))
    return DB


def decide(event, table=None, now=None):
    """(allowed, reason) for a RegisterThing request: the serial and the claim certificate must be listed."""
    table = table or TABLE
    serial = str((event.get("parameters") or {}).get("SerialNumber", ""))
    claim = str(event.get("claimCertificateId", ""))
    if not SERIAL.fullmatch(serial):
        return False, f"SerialNumber {serial[:130]!r} is not a valid thing name"
    keys = [{"id": {"S": "serial#" + serial}}, {"id": {"S": "claim#" + claim}}]
    found = _db().batch_get_item(RequestItems={table: {"Keys": keys, "ConsistentRead": True}})
    items = {item["id"]["S"]: item for item in found["Responses"].get(table, [])}
    claim_item = items.get("claim#" + claim)
    if claim_item is None:
        return False, f"claim certificate {claim[:12]} is not registered (iotpipe fleet claim create)"
    expires = int(claim_item.get("expiresAt", {}).get("N", "0"))
    if expires and expires <= (now if now is not None else time.time()):
        return False, f"claim certificate {claim[:12]} expired; create another (iotpipe fleet claim create)"
    if "serial#" + serial not in items:
        return False, f"serial {serial} is not on the allow-list (iotpipe fleet allow {serial})"
    return True, ""


def handler(event, _context):
    allowed, reason = decide(event)
    print(json.dumps({"message": "allowed" if allowed else "refused", "reason": reason,
                      "serial": str((event.get("parameters") or {}).get("SerialNumber", ""))[:130]}))
    return {"allowProvisioning": allowed}
