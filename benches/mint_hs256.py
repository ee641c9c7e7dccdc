"""Prints an HS256 JWT for the load benches: the JSON claims given, plus
exp = now + lifetime seconds (and iat = now with a fourth argument "iat").

    python3 benches/mint_hs256.py SECRET LIFETIME CLAIMS-JSON [iat]

Standard library only.
"""
import base64
import hashlib
import hmac
import json
import sys
import time

secret, lifetime, claims = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
now = int(time.time())
claims["exp"] = now + lifetime
if sys.argv[4:] == ["iat"]:
    claims["iat"] = now


def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def compact(value):
    return json.dumps(value, separators=(",", ":")).encode()


signing_input = b64(compact({"alg": "HS256", "typ": "JWT"})) + "." + b64(compact(claims))
signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
print(signing_input + "." + b64(signature))
