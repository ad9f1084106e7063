"""The serial console config tool (`pbx console`) and its host-side client (`pbx remote`)."""
