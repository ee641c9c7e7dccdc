"""Verifies porteiro's X-Porteiro-Jwt-Assertion values the way an
application would: PyJWT, with the keys fetched over HTTP from porteiro's
/sso/jwks.json (PyJWKClient picks the key by the token's kid).

    verify.py JWKS_URL ISSUER AUDIENCE TOKEN [AUDIENCE TOKEN ...]

Prints one JSON line per token: {"ok": true, "header": {...}, "claims":
{...}} or {"ok": false, "error": "..."}. Exits 0 either way (the test
decides); exits 2 on bad arguments or when the key set cannot be fetched.
"""

import json
import sys

import jwt


def main(argv):
    if len(argv) < 5 or len(argv) % 2 != 1:
        print(__doc__, file=sys.stderr)
        return 2
    jwks_url, issuer = argv[1], argv[2]
    pairs = list(zip(argv[3::2], argv[4::2]))
    # No cache between tokens: every one is checked against the key set as
    # porteiro serves it now.
    client = jwt.PyJWKClient(jwks_url, cache_keys=False, cache_jwk_set=False)
    try:
        client.get_jwk_set()
    except jwt.PyJWKClientError as e:
        print(f"cannot fetch {jwks_url}: {e}", file=sys.stderr)
        return 2
    for audience, token in pairs:
        try:
            key = client.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["ES256", "EdDSA"],
                audience=audience,
                issuer=issuer,
                options={"require": ["iss", "aud", "sub", "iat", "exp"]},
            )
            result = {"ok": True, "header": jwt.get_unverified_header(token), "claims": claims}
        except (jwt.PyJWTError, jwt.PyJWKClientError) as e:
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
