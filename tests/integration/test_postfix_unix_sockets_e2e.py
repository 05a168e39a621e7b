"""End to end: Postfix reaching ``tbes serve`` over unix sockets, as docs/deploy.md sets up.

The sockets live in a directory under Postfix's queue directory, group ``postfix`` and
setgid, and tbes runs with the umask 0007 of the drop-in ("Faster: unix sockets"): the
sockets come out 0770 with the group ``postfix``, so Postfix's ``smtpd`` (the ``postfix``
user) may connect and nobody else. ``main.cf`` names them relative to the queue directory
(``unix:tbes/milter.sock``), as docs/postfix.md does, and both smtpd listeners run chrooted
in the queue directory, as on Debian. The Exchange 2007 server was first
seen 95 days before the configuration's ``fixed_time`` (stage 8: blocked all hour).
"""

from __future__ import annotations

import grp
import os
import shutil
import smtplib
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter_support import reply_line
from integration.postfix import (
    EX2007,
    RCPT,
    Listener,
    PostfixServer,
    TbesProcess,
    free_port,
    require_root,
    seed_then_advance,
)

pytestmark = [pytest.mark.service("postfix"), pytest.mark.timeout(120)]

CONFIG = """\
tenant = "receiver"
own_hosts = ["receiver.example"]

[[connector]]
kind = "on_premises"
tenant = "fabrikam"
server_id = "fabrikam-ex2007"
networks = ["127.0.0.2/32"]

[testing]
fixed_time = {now}
"""
# `tbes serve` under the drop-in's UMask=0007.
SERVE = (
    "import os, sys; os.umask(0o007); from tbes.cli.daemons import serve; serve.main(sys.argv[1:])"
)


def _wait_for_socket(path: Path, serve: TbesProcess) -> None:
    deadline = time.monotonic() + 30
    while True:
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(path))
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {path}: {serve.log.read_text()}") from None
            time.sleep(0.05)
        finally:
            probe.close()


def _reply(port: int, *, policy_only: bool) -> str:
    """One message from the Exchange 2007 server's address: the final reply line."""
    with smtplib.SMTP("127.0.0.1", port, source_address=("127.0.0.2", 0), timeout=30) as client:
        client.ehlo("client.example")
        client.mail("alice@fabrikam.example")
        code, text = client.rcpt(RCPT)
        if code < 400 and not policy_only:
            try:
                code, text = client.data(EX2007)
            except smtplib.SMTPDataError as error:
                code, raw = error.smtp_code, error.smtp_error
                text = raw if isinstance(raw, bytes) else raw.encode()
        return f"{code} {text.decode()}"


class _Site:
    def __init__(self, postfix: PostfixServer, sockets: Path) -> None:
        self.milter_port, self.policy_port = postfix.ports
        self.sockets = sockets


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Site]:
    require_root()
    work = tmp_path_factory.mktemp("unix")
    config, db = work / "adapters.toml", work / "tbes.db"
    seed_then_advance(config, db, CONFIG, peer_ip="127.0.0.2", days=95)  # stage 8
    main_cf = (
        "smtpd_milters = unix:tbes/milter.sock\nmilter_default_action = tempfail\n"
        "smtpd_restriction_classes = tbes_policy\n"
        "tbes_policy = check_policy_service { unix:tbes/policy.sock, timeout=10s,"
        " default_action=DUNNO }\n"
    )
    # Chrooted in the queue directory, as Debian runs smtpd: the relative names hold there.
    listeners = [
        Listener(free_port(), chroot=True),  # the milter alone
        Listener(
            free_port(),
            (
                ("smtpd_milters", ""),
                ("smtpd_recipient_restrictions", "reject_unauth_destination,tbes_policy"),
            ),
            chroot=True,
        ),
    ]
    with PostfixServer(main_cf, listeners) as postfix:
        # docs/deploy.md: install -d -o tbes -g postfix -m 2750 /var/spool/postfix/tbes
        sockets = postfix.root / "spool" / "tbes"
        sockets.mkdir()
        shutil.chown(sockets, group="postfix")
        sockets.chmod(0o2750)
        args = [
            *("--milter", f"unix:{sockets / 'milter.sock'}"),
            *("--policy", f"unix:{sockets / 'policy.sock'}"),
            *("--db", str(db), "--config", str(config)),
        ]
        serve = TbesProcess(SERVE, args, [], work / "serve.log")
        with serve:
            for name in ("milter.sock", "policy.sock"):
                _wait_for_socket(sockets / name, serve)
            yield _Site(postfix, sockets)
    assert serve.returncode == 0, (work / "serve.log").read_text(errors="replace")[-3000:]


def test_the_sockets_are_for_the_postfix_group_only(site: _Site) -> None:
    postfix = grp.getgrnam("postfix").gr_gid
    for name in ("milter.sock", "policy.sock"):
        status = os.stat(site.sockets / name)
        assert stat.S_ISSOCK(status.st_mode)
        assert stat.S_IMODE(status.st_mode) == 0o770, oct(status.st_mode)
        assert status.st_gid == postfix


def test_postfix_reaches_the_milter_over_its_unix_socket(site: _Site) -> None:
    assert _reply(site.milter_port, policy_only=False) == reply_line("blocked", 60)


def test_postfix_reaches_the_policy_service_over_its_unix_socket(site: _Site) -> None:
    # Through the milter first: the server is then active behind its connector, and at
    # RCPT, with no headers, the policy service refuses what every active server would get.
    _reply(site.milter_port, policy_only=False)
    line = _reply(site.policy_port, policy_only=True)
    blocked = reply_line("blocked", 60)
    assert line == f"{blocked[:12]}<{RCPT}>: Recipient address rejected: {blocked[12:]}"
