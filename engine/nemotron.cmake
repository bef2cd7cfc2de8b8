# Nemotron-Nano-12B-v2-VL: the NemotronH hybrid LLM, the RADIO vision side with pixel shuffle and
# mlp1, the composed model (config, checkpoint, video prompt, EVS) over the op set, and the
# frame preprocessing. Included from engine/CMakeLists.txt; the guard lets tests/nemotron
# include it too. clipcap_preprocess (engine/preprocess.cmake, the bicubic resize) may be
# defined after this file, as may clipcap_qwen2_5_vl_layout (which holds the shared sampler,
# engine/sampler.c); CMake resolves the links by name.
if(NOT TARGET clipcap_nemotron AND TARGET clipcap_engine_core)
    add_library(clipcap_nemotron STATIC
        ${CMAKE_CURRENT_LIST_DIR}/nemotron_h.c
        ${CMAKE_CURRENT_LIST_DIR}/radio.c
        ${CMAKE_CURRENT_LIST_DIR}/nemotron_vl.c
        ${CMAKE_CURRENT_LIST_DIR}/nemotron_vl_runner.c
        ${CMAKE_CURRENT_LIST_DIR}/preprocess_nemotron.c)
    target_include_directories(clipcap_nemotron PUBLIC ${CMAKE_CURRENT_LIST_DIR})
    target_link_libraries(clipcap_nemotron PUBLIC clipcap_engine_core clipcap_preprocess
                          clipcap_qwen2_5_vl_layout m)
endif()

# The engine.h API for Nemotron (engine.c dispatches to it): the model plus the tokenizer
# (engine/tokenizer.cmake) and the provenance reader (clipcap_engine_manifest, defined in
# engine/qwen2_5_vl.cmake), linked by name.
if(NOT TARGET clipcap_nemotron_engine AND TARGET clipcap_nemotron)
    add_library(clipcap_nemotron_engine STATIC ${CMAKE_CURRENT_LIST_DIR}/nemotron_vl_engine.c)
    target_include_directories(clipcap_nemotron_engine PUBLIC ${CMAKE_CURRENT_LIST_DIR})
    target_link_libraries(clipcap_nemotron_engine PUBLIC clipcap_nemotron clipcap_tokenizer
                          clipcap_engine_manifest)
endif()
