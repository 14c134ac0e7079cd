"""What every command-line tool of the package shares: one-line errors for bad flags."""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineArgumentParser(argparse.ArgumentParser):
    """
    argparse, but a bad flag (``--epsilon abc``, an unknown choice) is one line on stderr and exit
    status 2, like the other bad input, instead of the usage block and the message.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
