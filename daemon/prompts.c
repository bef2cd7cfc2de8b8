// prompts.c: see prompts.h. Texts copied character for character (including whitespace)
// from NeMo Curator's caption_preparation.py so captions are comparable with the peer's.
#include "prompts.h"

#include <string.h>

static const struct {
    const char *variant;
    const char *text;
} prompt_table[] = {
    {"default", "\n"
                "        Elaborate on the visual and narrative elements of the video in detail.\n"
                "    "},
    {"av", "\n"
           "        The video depicts the view from a camera mounted on a car as it is driving.\n"
           "        Pay special attention to the motion of the cars, including the primary car\n"
           "        whose point-of-view we observe in the video. Also note important factors\n"
           "        that would relate to driving safety like the relative positions of "
           "pedestrians,\n"
           "        lane markers, road signs, traffic signals, and any aggressive driving "
           "behavior\n"
           "        of other vehicles. Also pay attention to interesting landmarks and describe\n"
           "        them in detail.\n"
           "    "},
    {"av-surveillance",
     "\n"
     "        The video depicts the view from a surveillance camera. Pay special attention\n"
     "        to the motion of the cars and other important factors that would relate to\n"
     "        driving safety like the relative positions of pedestrians, lane markers,\n"
     "        road signs, traffic signals, and any aggressive driving behavior of vehicles.\n"
     "        Also pay attention to interesting landmarks and describe them in detail.\n"
     "    "},
};

const char *prompt_for_variant(const char *prompt_variant)
{
    for (size_t i = 0; i < sizeof(prompt_table) / sizeof(prompt_table[0]); i++)
        if (strcmp(prompt_table[i].variant, prompt_variant) == 0)
            return prompt_table[i].text;
    return NULL;
}
