"""`tftl-fleet keys`: the files a fleet across machines needs, made with `cryptography` (a
Flower dependency), in the formats Flower's own options read.

  server: ca.crt + ca.key (a private certificate authority, kept by the operator), server.pem +
          server.key (the SuperLink's TLS certificate for the given host names / addresses,
          signed by the CA). The SuperLink takes server.pem, server.key and ca.crt
          (--ssl-certfile, --ssl-keyfile, --ssl-ca-certfile); every device gets ca.crt
          (flower-supernode --root-certificates) and trusts only this SuperLink.
  device: NAME.key + NAME.pub, an ECDSA P-384 key pair in OpenSSH format (what
          flower-supernode --auth-supernode-private-key and `flwr supernode register` read).
          The key stays on the device; the server registers NAME.pub (serve --devices DIR), and
          with SuperNode authentication on, a SuperNode whose key is not registered is refused.

Private keys are written with mode 0600; nothing is overwritten.
"""

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tftl.runtime.errors import InputError

CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.crt", "ca.key", "server.pem", "server.key"
VALID_DAYS = 825  # the longest TLS server certificate lifetime common clients accept


def _write_new(path, data: bytes, private: bool) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    except FileExistsError:
        raise InputError(f"{path} already exists — keys are never overwritten; pass another folder") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(host: str):
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _certificate(subject, issuer, public_key, signer, *, ca: bool, hosts=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def server_files(folder, hosts) -> dict:
    """A CA and a SuperLink certificate for `hosts` (names or addresses the devices dial) in `folder`."""
    if not hosts:
        raise InputError("keys: pass --host for every name or address the devices use to reach the server")
    os.makedirs(folder, exist_ok=True)
    ca_key, key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tftl-fleet CA")])
    ca = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = _certificate(name, ca_name, key.public_key(), ca_key, ca=False, hosts=hosts)
    paths = {n: os.path.join(folder, n) for n in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY)}
    _write_new(paths[CA_KEY], _pem_key(ca_key), True)
    _write_new(paths[SERVER_KEY], _pem_key(key), True)
    _write_new(paths[CA_CERT], ca.public_bytes(serialization.Encoding.PEM), False)
    _write_new(paths[SERVER_CERT], cert.public_bytes(serialization.Encoding.PEM), False)
    return paths


def device_files(folder, name: str) -> dict:
    """A device's SuperNode authentication key pair, NAME.key and NAME.pub, in `folder`."""
    if not name or os.sep in name or name.startswith("."):
        raise InputError(f"keys: --device must be a plain file name, got {name!r}")
    os.makedirs(folder, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    paths = {"key": os.path.join(folder, f"{name}.key"), "pub": os.path.join(folder, f"{name}.pub")}
    _write_new(paths["key"], private, True)
    _write_new(paths["pub"], public + f" {name}\n".encode(), False)
    return paths
