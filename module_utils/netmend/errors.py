"""The error every netmend check raises for bad input: all problems at once, each naming its field."""


class ProblemsError(ValueError):
    """`problems` is a list of (field, message); str() gives one "field: message" line each."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(f"{f}: {m}" for f, m in self.problems))
