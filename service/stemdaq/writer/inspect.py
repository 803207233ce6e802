from dataclasses import dataclass
@dataclass
class InspectReport: pass
def inspect_file(p): pass
