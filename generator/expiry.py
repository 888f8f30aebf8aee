"""The expiry warning window, in one place for `cert inspect` and `check --warn-days`.

A module of its own, without imports: generator.cli reads it when the command is defined
(`check --warn-days` shows it as its default) and must not import `cryptography`, which
generator.certificates does.
"""

#: A certificate or key credential that ends within this many days gets a warning
#: (`cert inspect`; `check` exits 6 unless `--warn-days` says otherwise).
EXPIRY_WARNING_DAYS = 60
