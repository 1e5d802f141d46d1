"""What the dataset report can say about a photo or a set of photos, in words a user can act on.

Codes are stable (the API returns them); messages are for people and may change.
"""

from __future__ import annotations

from enum import StrEnum


class Flag(StrEnum):
    # One photo
    UNREADABLE = "unreadable"
    BLANK = "blank"
    NO_FACE = "no_face"
    MULTIPLE_FACES = "multiple_faces"
    FACE_TOO_SMALL = "face_too_small"
    BLURRY = "blurry"
    TOO_DARK = "too_dark"
    TOO_BRIGHT = "too_bright"
    # One photo against the others
    NEAR_DUPLICATE = "near_duplicate"
    OTHER_PERSON = "other_person"


class DatasetWarning(StrEnum):
    MOSTLY_NO_FACE = "mostly_no_face"
    SEVERAL_PEOPLE = "several_people"
    FEW_POSES = "few_poses"
    SAME_BACKGROUND = "same_background"
    FEW_USABLE = "few_usable"
    ANALYSIS_PENDING = "analysis_pending"


FLAG_MESSAGES: dict[Flag, str] = {
    Flag.UNREADABLE: "The face check could not read this file. Remove it and upload the photo again.",
    Flag.BLANK: "This image is blank or nearly one colour: there is nothing to learn from it. Remove it.",
    Flag.NO_FACE: "No face found — the LoRA learns a face from faces. Remove it unless the character is "
    "not a person.",
    Flag.MULTIPLE_FACES: "More than one face — the LoRA may blend the people together. Crop it to one "
    "person or remove it.",
    Flag.FACE_TOO_SMALL: "The face is small at the training resolution ({face_pixels} px wide) — use a "
    "closer photo, or keep face crops on.",
    Flag.BLURRY: "The face is blurred — the LoRA learns the blur too. Use a sharper photo.",
    Flag.TOO_DARK: "The face is too dark to show its features. Use a brighter photo.",
    Flag.TOO_BRIGHT: "The face is washed out by light. Use a photo with softer light.",
    Flag.NEAR_DUPLICATE: "Nearly the same photo as {other} — duplicates add no variety and push the LoRA "
    "to copy them. Keep one.",
    Flag.OTHER_PERSON: "This may be someone else — the face is far from the rest of the set "
    "(distance {distance} where the same person stays under {threshold}).",
}

# A few words per flag for a summary ("2 photos: no face found"), worst first: what teaches the LoRA
# nothing or the wrong face before what only teaches it less well.
FLAG_SUMMARIES: dict[Flag, str] = {
    Flag.UNREADABLE: "could not be read",
    Flag.BLANK: "blank",
    Flag.NO_FACE: "no face found",
    Flag.OTHER_PERSON: "may be someone else",
    Flag.MULTIPLE_FACES: "more than one face",
    Flag.FACE_TOO_SMALL: "face too small",
    Flag.BLURRY: "face blurred",
    Flag.TOO_DARK: "face too dark",
    Flag.TOO_BRIGHT: "face washed out",
    Flag.NEAR_DUPLICATE: "nearly a duplicate",
}

WARNING_MESSAGES: dict[DatasetWarning, str] = {
    DatasetWarning.MOSTLY_NO_FACE: "Most photos show no face ({without} of {total}). A LoRA of a person "
    "needs photos of their face; if this character is not a person, say so in its settings.",
    DatasetWarning.SEVERAL_PEOPLE: "The photos seem to show more than one person: {others} may be "
    "someone else. A LoRA trained on two people looks like neither.",
    DatasetWarning.FEW_POSES: "Almost every face looks {pose}. Add photos turned left and right for a "
    "LoRA that holds up from every angle.",
    DatasetWarning.SAME_BACKGROUND: "Most photos share one background; the LoRA may learn the room along "
    "with the person. Add photos taken elsewhere.",
    DatasetWarning.FEW_USABLE: "Only {usable} of {total} photos have no problem; {minimum} or more good "
    "photos train a better likeness.",
    DatasetWarning.ANALYSIS_PENDING: "The face check of the newest photos is still running; this report "
    "will update by itself.",
}


def flag_message(flag: Flag | str, **details: object) -> str:
    return FLAG_MESSAGES[Flag(flag)].format(**details)


def warning_message(warning: DatasetWarning | str, **details: object) -> str:
    return WARNING_MESSAGES[DatasetWarning(warning)].format(**details)
