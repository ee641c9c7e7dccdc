#!/usr/bin/env python3
"""A small SAML 2.0 identity provider for porteiro's end-to-end tests.

Everything SAML here is pysaml2's (an independent, maintained implementation):
parsing the SP's AuthnRequest, reading the SP's metadata, building the
Response and Assertion, and signing them with xmlsec1. This file only wires
pysaml2 to HTTP:

    GET /metadata        the IdP's metadata (entity id, signing certificate,
                         HTTP-Redirect SingleSignOnService)
    GET /sso/redirect    SAMLRequest (HTTP-Redirect binding) -> an HTML page
                         with an auto-submitting form (HTTP-POST binding)
                         carrying the signed SAMLResponse and the RelayState

With --want-signed-requests the IdP verifies the HTTP-Redirect signature of
each AuthnRequest (SigAlg, Signature) against the signing certificate in the
SP's metadata, and refuses unsigned or badly signed requests, as Azure AD
does with "require verification certificates".

The SP's metadata is read from porteiro's /sso/saml/metadata when an
AuthnRequest arrives, so the IdP knows the SP the way a real IdP does once an
administrator has pasted that metadata. Its URL is --sp-metadata-url or, as
the tests do (porteiro starts after the IdP, on a port of its own), the first
line on stdin: {"sp_metadata_url": URL}, echoed back on stdout once taken.

The user is fixed (there is no login page); the attributes carry the claim
names Azure AD (Entra ID) sends, with no NameFormat, as Azure AD does.

Test knobs, extra query parameters on /sso/redirect, let a test ask for an
answer that a misconfigured or hostile party would produce, still signed by
pysaml2:

    sign=assertion|response|both|none   what is signed (default assertion,
                                        Azure AD's default)
    signer=alt                          sign with the other key pair
                                        (--alt-key/--alt-cert), which the
                                        metadata does not list
    audience=URI                        the AudienceRestriction
    lifetime=MINUTES                    validity of the assertion and of the
                                        SubjectConfirmationData (negative:
                                        already expired)
    destination=URL                     Response Destination and Recipient
    issuer=URI                          the Issuer of Response and Assertion
    alg=sha256|sha1                     signature and digest algorithm
                                        (default sha256, as Azure AD)
    email=, name=, groups=a,b           the user
    name_id=ID                          a persistent NameID instead of the
                                        email
    status=authn_failed                 an error Response (no assertion)
    audience=none                       no AudienceRestriction at all
    shift=SECONDS                       every instant the IdP writes
                                        (IssueInstant, NotBefore,
                                        NotOnOrAfter) moved by SECONDS, as
                                        an IdP whose clock is off writes them
    assertion_id=ID                     the Assertion's ID (a replay of an
                                        assertion the IdP signs again)

On start it prints one JSON line to stdout: {"url": "http://127.0.0.1:PORT"}.
It exits when its standard input closes, so it never outlives the test that
started it, even one that panicked.
"""

import argparse
import json
import shutil
import sys
import threading
import time
import urllib.parse
import urllib.request
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# pysaml2 names a cipher mode that cryptography has moved; noise on stderr.
warnings.filterwarnings("ignore", message=".*CFB.*")

import saml2.assertion
import saml2.entity
import saml2.s_utils
import saml2.time_util
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.assertion import Policy
from saml2.attribute_converter import from_local
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor
from saml2.samlp import STATUS_AUTHN_FAILED
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NAMEID_FORMAT_PERSISTENT, NameID
from saml2.server import Server
from saml2.xmldsig import DIGEST_SHA1, DIGEST_SHA256, SIG_RSA_SHA1, SIG_RSA_SHA256

# Azure AD (Entra ID) claim names.
CLAIM_EMAIL = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"
CLAIM_NAME = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
CLAIM_GIVEN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname"
CLAIM_GROUPS = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"

# Azure AD signs with RSA-SHA256; pysaml2's default is RSA-SHA1.
SIGN_ALGS = {"sha256": SIG_RSA_SHA256, "sha1": SIG_RSA_SHA1}
DIGEST_ALGS = {"sha256": DIGEST_SHA256, "sha1": DIGEST_SHA1}

# What is released to every SP: all attributes, valid for 15 minutes.
POLICY = {"default": {"lifetime": {"minutes": 15}, "attribute_restrictions": None}}

DEFAULT_USER = {
    "email": "carol@clockin.example",
    "name": "Carol Clock",
    "groups": ["timekeepers", "backoffice"],
}


def azure_attributes(acs, ava, name_format):
    """Attributes named by their claim URI with no NameFormat, as Azure AD
    sends them (pysaml2 would add NameFormat="...:uri")."""
    attributes = from_local(acs, ava, name_format) or []
    for attribute in attributes:
        attribute.name_format = None
    return attributes


saml2.assertion.from_local = azure_attributes


class KnobPolicy(Policy):
    """pysaml2's policy, with the audience and lifetime a test asked for."""

    audience = None
    lifetime = None

    def conditions(self, sp_entity_id):
        conds = super().conditions(sp_entity_id)
        if self.audience == "none":
            conds.audience_restriction = []
        elif self.audience is not None:
            conds.audience_restriction[0].audience[0].text = self.audience
        return conds

    def get_lifetime(self, sp_entity_id):
        if self.lifetime is not None:
            return {"minutes": self.lifetime}
        return super().get_lifetime(sp_entity_id)


def make_server(base, entity_id, key, cert, xmlsec, want_signed_requests=False):
    conf = IdPConfig()
    conf.load(
        {
            "entityid": entity_id or base + "/metadata",
            "service": {
                "idp": {
                    "name": "porteiro test IdP",
                    "endpoints": {
                        "single_sign_on_service": [(base + "/sso/redirect", BINDING_HTTP_REDIRECT)],
                    },
                    "policy": POLICY,
                    "name_id_format": [NAMEID_FORMAT_EMAILADDRESS],
                    # When set, pysaml2 verifies the HTTP-Redirect signature
                    # (SigAlg, Signature) with the certificate in the SP's
                    # metadata, and refuses unsigned requests.
                    "want_authn_requests_signed": want_signed_requests,
                },
            },
            "key_file": key,
            "cert_file": cert,
            "xmlsec_binary": xmlsec,
            "metadata": {},
            "accepted_time_diff": 60,
        }
    )
    return Server(config=conf)


# pysaml2 imports these by name into each module that writes instants or
# makes assertions; the knobs swap them there for one answer (under the lock).
ORIGINALS = {
    (saml2.assertion, "instant"): saml2.assertion.instant,
    (saml2.assertion, "in_a_while"): saml2.assertion.in_a_while,
    (saml2.assertion, "assertion_factory"): saml2.assertion.assertion_factory,
    (saml2.entity, "instant"): saml2.entity.instant,
    (saml2.s_utils, "instant"): saml2.s_utils.instant,
}


def apply_knobs(knob):
    """Installs the `shift` and `assertion_id` knobs (or the originals)."""
    for (module, name), original in ORIGINALS.items():
        setattr(module, name, original)
    shift = int(knob.get("shift", "0"))
    if shift:

        def shifted_instant(format=saml2.time_util.TIME_FORMAT, time_stamp=0):
            return saml2.time_util.instant(format, (time_stamp or time.time()) + shift)

        def shifted_in_a_while(**delta):
            delta["seconds"] = delta.get("seconds", 0) + shift
            return saml2.time_util.in_a_while(**delta)

        for module in (saml2.assertion, saml2.entity, saml2.s_utils):
            module.instant = shifted_instant
        saml2.assertion.in_a_while = shifted_in_a_while
    if "assertion_id" in knob:
        factory = ORIGINALS[(saml2.assertion, "assertion_factory")]

        def fixed_id_factory(**kwargs):
            assertion = factory(**kwargs)
            assertion.id = knob["assertion_id"]
            return assertion

        saml2.assertion.assertion_factory = fixed_id_factory


class Idp:
    def __init__(self, args, base):
        self.lock = threading.Lock()
        self.sp_metadata_url = args.sp_metadata_url
        signed = args.want_signed_requests
        self.server = make_server(base, args.entity_id, args.key, args.cert, args.xmlsec, signed)
        self.alt = make_server(base, args.entity_id, args.alt_key, args.alt_cert, args.xmlsec, signed) if args.alt_key else None
        self.metadata_xml = str(entity_descriptor(self.server.config))
        self.sp_loaded = False

    def load_sp_metadata(self):
        """Reads porteiro's SP metadata, as an administrator pastes it."""
        if self.sp_loaded:
            return
        with urllib.request.urlopen(self.sp_metadata_url, timeout=10) as resp:
            xml = resp.read().decode("utf-8")
        for server in filter(None, [self.server, self.alt]):
            server.metadata.load("inline", xml)
        self.sp_loaded = True

    def answer(self, query):
        """An AuthnRequest by HTTP-Redirect -> the HTML form (HTTP-POST)."""
        knob = {k: v[-1] for k, v in query.items()}
        with self.lock:
            apply_knobs(knob)
            self.load_sp_metadata()
            parsed = self.server.parse_authn_request(
                knob["SAMLRequest"],
                BINDING_HTTP_REDIRECT,
                relay_state=knob.get("RelayState"),
                sigalg=knob.get("SigAlg"),
                signature=knob.get("Signature"),
            )
            request = parsed.message
            # Where the SP's metadata says its ACS is, for the binding it asked.
            args = self.server.response_args(request, [BINDING_HTTP_POST])
            destination = knob.get("destination", args["destination"])
            user = {
                "email": knob.get("email", DEFAULT_USER["email"]),
                "name": knob.get("name", DEFAULT_USER["name"]),
                "groups": knob["groups"].split(",") if "groups" in knob else DEFAULT_USER["groups"],
            }
            identity = {
                CLAIM_EMAIL: [user["email"]],
                CLAIM_NAME: [user["name"]],
                CLAIM_GIVEN: [user["name"].split(" ")[0]],
                CLAIM_GROUPS: user["groups"],
            }
            if "name_id" in knob:  # an opaque, persistent identifier
                name_id = NameID(format=NAMEID_FORMAT_PERSISTENT, text=knob["name_id"])
            else:
                name_id = NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=user["email"])
            sign = knob.get("sign", "assertion")
            server = self.alt if knob.get("signer") == "alt" else self.server
            if server is None:
                raise ValueError("signer=alt needs --alt-key and --alt-cert")
            policy = KnobPolicy(restrictions=POLICY, mds=server.metadata)
            policy.audience = knob.get("audience")
            policy.lifetime = int(knob["lifetime"]) if "lifetime" in knob else None
            if knob.get("status") == "authn_failed":  # the user cancelled, or was refused
                response = server.create_error_response(
                    args["in_response_to"],
                    destination,
                    (STATUS_AUTHN_FAILED, "The user cancelled the sign-in."),
                    sign=sign in ("response", "both"),
                )
                http = server.apply_binding(
                    BINDING_HTTP_POST, str(response), destination, knob.get("RelayState", ""), response=True
                )
                return http["data"]
            response = server.create_authn_response(
                identity,
                in_response_to=args["in_response_to"],
                destination=destination,
                sp_entity_id=args["sp_entity_id"],
                name_id=name_id,
                authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"},
                issuer=knob.get("issuer", self.server.config.entityid),
                sign_assertion=sign in ("assertion", "both"),
                sign_response=sign in ("response", "both"),
                release_policy=policy,
                sign_alg=SIGN_ALGS[knob.get("alg", "sha256")],
                digest_alg=DIGEST_ALGS[knob.get("alg", "sha256")],
            )
            http = server.apply_binding(
                BINDING_HTTP_POST, str(response), destination, knob.get("RelayState", ""), response=True
            )
        return http["data"]


def handler_for(idp):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            sys.stderr.write("idp: " + (fmt % args) + "\n")

        def send(self, status, body, content_type):
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            try:
                if url.path == "/metadata":
                    self.send(200, idp.metadata_xml, "application/samlmetadata+xml")
                elif url.path == "/sso/redirect":
                    query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
                    if "SAMLRequest" not in query:
                        self.send(400, "no SAMLRequest\n", "text/plain")
                        return
                    self.send(200, idp.answer(query), "text/html; charset=utf-8")
                else:
                    self.send(404, "not found\n", "text/plain")
            except Exception as e:  # the test reads the reason
                sys.stderr.write(f"idp: error: {type(e).__name__}: {e}\n")
                self.send(500, f"{type(e).__name__}: {e}\n", "text/plain")

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--key", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--alt-key")
    p.add_argument("--alt-cert")
    p.add_argument("--xmlsec", default=shutil.which("xmlsec1"), help="path of the xmlsec1 binary")
    p.add_argument(
        "--sp-metadata-url",
        help="porteiro's SP metadata URL; without it, the first stdin line, "
        'a JSON object {"sp_metadata_url": URL}, says it (acknowledged by echoing it on stdout)',
    )
    p.add_argument("--entity-id", help="the IdP's entity id (default: its metadata URL)")
    p.add_argument(
        "--want-signed-requests",
        action="store_true",
        help="refuse AuthnRequests without a valid HTTP-Redirect signature by the SP's metadata key",
    )
    args = p.parse_args()
    if not args.xmlsec:
        sys.exit("idp: the xmlsec1 binary is not installed (Debian package xmlsec1)")

    httpd = ThreadingHTTPServer((args.host, args.port), None)
    base = "http://%s:%d" % (args.host, httpd.server_address[1])
    idp = Idp(args, base)
    httpd.RequestHandlerClass = handler_for(idp)
    print(json.dumps({"url": base}), flush=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    # The test starts porteiro (on a port of its own choosing) after this
    # IdP, then says where porteiro's SP metadata is.
    for line in sys.stdin:
        told = json.loads(line)
        with idp.lock:
            idp.sp_metadata_url = told["sp_metadata_url"]
        print(json.dumps(told), flush=True)
    # stdin closed: the test has ended (or died).


if __name__ == "__main__":
    main()
