"""From photos or a video to a posed capture: sharp frames of a video, structure from
motion with pycolmap."""
