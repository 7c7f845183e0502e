from keras_trips.layers.trips_patch_selection import validate_keep_rate
from keras_trips.layers.trips_vision_block import GUIDANCE_MODES
from keras_trips.models.selection_provenance import scores_on_patches


def validate_selection(selection_layers, num_layers, guidance):
    """`selection_layers` as a sorted tuple, checked against `num_layers`
    blocks, and `guidance` checked; or a ValueError naming the argument."""
    selection_layers = tuple(int(i) for i in selection_layers)
    for index in selection_layers:
        if not 0 <= index < num_layers:
            raise ValueError(
                f"Selection layer index {index} is out of range for "
                f"num_layers={num_layers} (valid: 0 to {num_layers - 1})."
            )
    if len(set(selection_layers)) != len(selection_layers):
        raise ValueError(f"`selection_layers` repeats a block: {selection_layers}")
    if guidance not in GUIDANCE_MODES:
        raise ValueError(
            f"`guidance` must be one of {GUIDANCE_MODES}. Received: {guidance!r}"
        )
    return tuple(sorted(selection_layers))


class TRIPSSelectionStages:
    """Keep rates, `call` and `selection_trace` of an encoder that selects.

    Shared by `TRIPSVisionEncoder` and `TRIPSSelectingEncoder`, which
    provide `selection_layers`, `keep_rate`, `guidance` and
    `_encode(inputs, keep_rate, guidance, track, training)`, returning
    `(outputs, provenance, stages)` (the last two only with `track`).
    """

    def stage_rates(self, keep_rate):
        """One validated keep rate per selection layer, as a tuple: `keep_rate`
        is one rate for every stage or a list of one per stage."""
        if isinstance(keep_rate, (list, tuple)):
            if len(keep_rate) != len(self.selection_layers):
                raise ValueError(
                    f"Got {len(keep_rate)} keep rates for "
                    f"{len(self.selection_layers)} selection layers "
                    f"{self.selection_layers}: {keep_rate}"
                )
            return tuple(validate_keep_rate(rate) for rate in keep_rate)
        return (validate_keep_rate(keep_rate),) * len(self.selection_layers)

    def set_keep_rate(self, keep_rate):
        """Changes the keep rate(s) used by default; no weights change.

        Compiled `fit`/`predict` functions of a model that holds this encoder
        must be rebuilt afterwards (the token counts are static shapes).
        """
        self.keep_rate = self.stage_rates(keep_rate)

    def call(
        self,
        inputs,
        keep_rate=None,
        return_provenance=False,
        guidance=None,
        training=None,
        return_scores=False,
    ):
        outputs, provenance, stages = self._encode(
            inputs,
            keep_rate,
            self._guidance(guidance),
            return_provenance or return_scores,
            training,
        )
        extras = []
        if return_provenance:
            extras.append(provenance)
        if return_scores:
            extras.append([stage["scores"] for stage in stages])
        return (outputs, *extras) if extras else outputs

    def selection_trace(self, inputs, keep_rate=None, guidance=None):
        """What each selection stage did, for pictures and analysis.

        Args:
            inputs: as for `call`.
            keep_rate: overrides the keep rate(s).
            guidance: overrides the guidance mode.

        Returns:
            A list with one dict per stage that selects: `"block"` (its
            index), `"keep_rate"`, `"provenance"` `(B, T, num_patches)` after
            the stage (as `call(..., return_provenance=True)` gives after the
            last) and `"scores"` `(B, num_patches)`, the stage's scores on the
            original patches (`selection_provenance.scores_on_patches`).
        """
        return self._encode(inputs, keep_rate, self._guidance(guidance), True, False)[2]

    def _guidance(self, guidance):
        """The default guidance mode, or `guidance` checked."""
        if guidance is None:
            return self.guidance
        if guidance not in GUIDANCE_MODES:
            raise ValueError(
                f"`guidance` must be one of {GUIDANCE_MODES}. Received: {guidance!r}"
            )
        return guidance

    @staticmethod
    def _traced(stages, block, keep_rate, scores, provenance, selected, num_prefix):
        """Records a stage in `stages`: its scores spread onto the patches
        through the `provenance` before it, and the provenance `selected`
        after it (the stage's keep-and-fuse applied to the rows). Returns
        `selected`."""
        stages.append(
            {
                "block": block,
                "keep_rate": keep_rate,
                "provenance": selected,
                "scores": scores_on_patches(scores, provenance, num_prefix),
            }
        )
        return selected
