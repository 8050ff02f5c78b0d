"""
``twistd`` with every password check counted, for the end-to-end tests
that count what an attacker costs the server:

    python -m tests.e2e.counting_twistd COUNT_FILE [twistd arguments]

Each call of the real verification (``gateway.auth._verify_or_dummy``: the
argon2/bcrypt/crypt work, or the same work for an unknown user) appends a
byte to COUNT_FILE, then does the check as ever.
"""

import sys

from twisted.scripts.twistd import run

import gateway.auth


def main() -> None:
    count_file = sys.argv.pop(1)
    verify = gateway.auth._verify_or_dummy

    def counted(stored, password):
        with open(count_file, "ab") as counter:
            counter.write(b".")
        return verify(stored, password)

    gateway.auth._verify_or_dummy = counted
    sys.argv[0] = "twistd"
    run()


if __name__ == "__main__":
    main()
