# Nemotron-Nano-12B-v2-VL: the NemotronH hybrid LLM, the RADIO vision side with pixel shuffle and
# mlp1, and the composed model (config, checkpoint, video prompt, EVS), all over the op set.
# Included from engine/CMakeLists.txt; the guard lets tests/nemotron include it too.
if(NOT TARGET clipcap_nemotron AND TARGET clipcap_engine_core)
    add_library(clipcap_nemotron STATIC
        ${CMAKE_CURRENT_LIST_DIR}/nemotron_h.c
        ${CMAKE_CURRENT_LIST_DIR}/radio.c
        ${CMAKE_CURRENT_LIST_DIR}/nemotron_vl.c)
    target_include_directories(clipcap_nemotron PUBLIC ${CMAKE_CURRENT_LIST_DIR})
    target_link_libraries(clipcap_nemotron PUBLIC clipcap_engine_core m)
endif()
