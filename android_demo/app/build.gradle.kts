plugins {
    id("com.android.application")
}

android {
    namespace = "org.tftl.app"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.tftl.app"
        minSdk = 24
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        ndk {
            // Phones; add "armeabi-v7a" / "x86_64" for old phones or the emulator (each adds ~4 MB).
            abiFilters += listOf("arm64-v8a")
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = true
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    // A bundled model must stay uncompressed so it can be read (and mapped) as is.
    androidResources {
        noCompress += "tflite"
    }

    sourceSets {
        // The JVM tests under src/test drive the ViewModel with the host backend (libLiteRt.so via
        // JNA) and run in Maven (android_demo/pom.xml); they are not Android unit tests.
        getByName("test") {
            java.setSrcDirs(emptyList<String>())
        }
    }
}

dependencies {
    implementation(project(":core"))
    implementation("com.google.code.gson:gson:2.10.1")
    // The plain LiteRT runtime (org.tensorflow.lite.Interpreter with runSignature); no select-tf-ops:
    // tftl models use builtin ops only.
    implementation("com.google.ai.edge.litert:litert:2.1.4")
}
