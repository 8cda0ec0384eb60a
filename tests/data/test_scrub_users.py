"""data/scrub.py's opt-in USER kind: user names in sshd, pam_unix, sudo and su lines as those programs write them."""

from __future__ import annotations

import pytest

from megalang.data.scrub import DEFAULT_KINDS, KINDS, scrub

P = "Dec  4 10:15:01 web01 "
AUTH_LINES = [  # (line, the line with every user name replaced)
    (P + "sshd[2211]: Failed password for invalid user admin from 203.0.113.7 port 52144 ssh2",
     P + "sshd[2211]: Failed password for invalid user <USER> from 203.0.113.7 port 52144 ssh2"),
    (P + "sshd[2211]: Failed password for root from 203.0.113.7 port 52144 ssh2",
     P + "sshd[2211]: Failed password for <USER> from 203.0.113.7 port 52144 ssh2"),
    (P + "sshd[2211]: Failed password for invalid user web admin from 203.0.113.7 port 52144 ssh2",
     P + "sshd[2211]: Failed password for invalid user <USER> from 203.0.113.7 port 52144 ssh2"),
    (P + "sshd[2290]: Accepted publickey for deploy from 198.51.100.23 port 40022 ssh2: ED25519 SHA256:x",
     P + "sshd[2290]: Accepted publickey for <USER> from 198.51.100.23 port 40022 ssh2: ED25519 SHA256:x"),
    (P + "sshd[2290]: Accepted password for alice from 198.51.100.23 port 40022 ssh2",
     P + "sshd[2290]: Accepted password for <USER> from 198.51.100.23 port 40022 ssh2"),
    (P + "sshd[2211]: Invalid user oracle from 203.0.113.9 port 41000",
     P + "sshd[2211]: Invalid user <USER> from 203.0.113.9 port 41000"),
    (P + "sshd[2211]: Connection closed by invalid user admin 203.0.113.7 port 52144 [preauth]",
     P + "sshd[2211]: Connection closed by invalid user <USER> 203.0.113.7 port 52144 [preauth]"),
    (P + "sshd[2211]: Disconnected from authenticating user root 203.0.113.7 port 52144 [preauth]",
     P + "sshd[2211]: Disconnected from authenticating user <USER> 203.0.113.7 port 52144 [preauth]"),
    (P + "CRON[2300]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
     P + "CRON[2300]: pam_unix(cron:session): session opened for user <USER>(uid=0) by (uid=0)"),
    (P + "sshd[2300]: pam_unix(sshd:session): session opened for user deploy by (uid=0)",
     P + "sshd[2300]: pam_unix(sshd:session): session opened for user <USER> by (uid=0)"),
    (P + "sudo: pam_unix(sudo:session): session opened for user root(uid=0) by deploy(uid=1000)",
     P + "sudo: pam_unix(sudo:session): session opened for user <USER>(uid=0) by <USER>(uid=1000)"),
    (P + "su: pam_unix(su:auth): authentication failure; logname=bob uid=1000 euid=0 tty=/dev/pts/0 ruser=bob "
         "rhost=  user=root",
     P + "su: pam_unix(su:auth): authentication failure; logname=<USER> uid=1000 euid=0 tty=/dev/pts/0 ruser=<USER> "
         "rhost=  user=<USER>"),
    (P + "sshd[9]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
         "rhost=203.0.113.7  user=pi",
     P + "sshd[9]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
         "rhost=203.0.113.7  user=<USER>"),
    (P + "sudo:   deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx",
     P + "sudo:   <USER> : TTY=pts/0 ; PWD=/home/<USER> ; USER=<USER> ; COMMAND=/usr/bin/systemctl restart nginx"),
    (P + "sudo:    alice : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/srv ; USER=root ; COMMAND=/bin/bash",
     P + "sudo:    <USER> : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/srv ; USER=<USER> ; COMMAND=/bin/bash"),
    (P + "su[411]: (to root) deploy on pts/0", P + "su[411]: (to <USER>) <USER> on pts/0"),
    (P + "su[412]: FAILED SU (to postgres) mallory on pts/3", P + "su[412]: FAILED SU (to <USER>) <USER> on pts/3"),
]


@pytest.mark.parametrize("line, expected", AUTH_LINES)
def test_user_names_in_auth_lines_are_replaced(line, expected):
    out, counts = scrub(line, ("USER",))
    assert out == expected
    assert counts == {"USER": expected.count("<USER>")}


def test_user_is_opt_in_and_runs_before_addresses():
    line = AUTH_LINES[6][0]
    assert "USER" in KINDS and "USER" not in DEFAULT_KINDS
    assert scrub(line) == (line.replace("203.0.113.7", "<IPV4>"), {"IPV4": 1})  # the default output is unchanged
    assert scrub(line, ("USER", "IPV4")) == (
        P + "sshd[2211]: Connection closed by invalid user <USER> <IPV4> port 52144 [preauth]", {"USER": 1, "IPV4": 1})


@pytest.mark.parametrize("text", [
    "The user named admin logged in from home.",
    "Failed to connect from the office; the session opened for users at nine.",
    "ratio : TTY is a terminal ; see the USER= variable",
    "x = a[1] : b ; PWD=/tmp",
])
def test_prose_with_similar_words_is_left_alone(text):
    assert scrub(text, ("USER",)) == (text, {})
