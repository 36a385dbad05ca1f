"""The help format of every ltpa command (``ltpa``, ``ltpa-job``, the job server)."""

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default: argparse's "(default: ...)", "(default:
    off)" for a flag, nothing when the help already says the default or that it is required."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or "required" in text:
            return text
        if action.option_strings and action.nargs == 0 and action.const is True:
            return f"{text} (default: {'on' if action.default else 'off'})"
        return super()._get_help_string(action)
