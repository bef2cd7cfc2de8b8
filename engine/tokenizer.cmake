# The tokenizer library (byte-level BPE from tokenizer.json, Qwen2.5-VL chat template).
# Included from engine/CMakeLists.txt; the guard lets tests/tokenizer include it too when the
# engine does not (yet).
if(NOT TARGET clipcap_tokenizer)
    find_package(PkgConfig REQUIRED)
    find_package(Threads REQUIRED)
    pkg_check_modules(CLIPCAP_TOKENIZER_DEPS REQUIRED IMPORTED_TARGET GLOBAL jansson libpcre2-8
                      libutf8proc)
    add_library(clipcap_tokenizer STATIC
        ${CMAKE_CURRENT_LIST_DIR}/tokenizer.c
        ${CMAKE_CURRENT_LIST_DIR}/tokenizer_encode.c
        ${CMAKE_CURRENT_LIST_DIR}/tokenizer_tables.c
        ${CMAKE_CURRENT_LIST_DIR}/tokenizer_utf8.c
        ${CMAKE_CURRENT_LIST_DIR}/chat_template.c)
    target_include_directories(clipcap_tokenizer PUBLIC ${CMAKE_CURRENT_LIST_DIR})
    target_link_libraries(clipcap_tokenizer PUBLIC PkgConfig::CLIPCAP_TOKENIZER_DEPS
                          Threads::Threads)
endif()
