// prompts.h: the caption prompts a job can name by variant, exactly as NeMo Curator's
// CaptionPreparationStage defines them (its triple-quoted strings are not stripped, so the
// leading newline and the indentation are part of the prompt the model sees).
#ifndef CLIPCAP_PROMPTS_H
#define CLIPCAP_PROMPTS_H

// Returns the prompt text for a variant ("default", "av", "av-surveillance"), or NULL.
const char *prompt_for_variant(const char *prompt_variant);

// The stage-2 prefix the peer puts before the stage-1 caption.
#define PROMPT_STAGE2_DEFAULT "Please refine this caption: "

#endif
