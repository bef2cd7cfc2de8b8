# Video preprocessing for the vision models (libc and libm only). Included from
# engine/CMakeLists.txt; the guard lets tests/preprocess include it too.
if(NOT TARGET clipcap_preprocess)
    add_library(clipcap_preprocess STATIC
        ${CMAKE_CURRENT_LIST_DIR}/image_resize.c
        ${CMAKE_CURRENT_LIST_DIR}/preprocess_qwen.c)
    target_include_directories(clipcap_preprocess PUBLIC ${CMAKE_CURRENT_LIST_DIR})
    target_link_libraries(clipcap_preprocess PUBLIC m)
    # The resize's inner loops are integer multiply-adds; -O3 vectorises them (same result).
    set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/image_resize.c
                                ${CMAKE_CURRENT_LIST_DIR}/preprocess_qwen.c
                                PROPERTIES COMPILE_OPTIONS "-O3")
endif()
