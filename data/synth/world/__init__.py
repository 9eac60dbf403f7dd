"""The `camelyon` preset of the synthetic world (`lymph synth --world camelyon`): its knobs and
scanning centres (params), its slide plan with mimics, harder lesions and artifacts (plan), its
tile painting (render), the sprites and fields of mimics and artifacts (mimics), lesion outlines
fitted to real CAMELYON16 ones (outlines) and trivial-rule checks (checks). Import from the
modules; `lymph.data.synth` re-exports what other packages use."""
