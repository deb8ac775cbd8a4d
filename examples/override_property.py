"""Blueprint: override properties of built-in resources.

    iotpipe render --blueprint examples/override_property.py:customise

The processor gets more memory and a description, and the raw bucket an extra tag. Resources are found by
their logical ids through the composition's ``names`` (so the blueprint also works for a prefixed pipeline).
"""

from __future__ import annotations

from troposphere import Tags

from iotpipe import Composition, naming


def customise(composition: Composition) -> Composition:
    """More memory for the processor, a description, and a cost tag on the raw bucket."""
    resources = composition.template.resources
    function = resources[composition.names.id(naming.PROCESSOR_FUNCTION)]
    function.MemorySize = 1024
    function.Description = "iotpipe processor (1 GB: more CPU for large batches)"
    bucket = resources[composition.names.id(naming.RAW_BUCKET)]
    bucket.Tags = bucket.Tags + Tags(CostCenter="plant-ops")
    return composition
